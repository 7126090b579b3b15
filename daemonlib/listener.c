/*
 * listener.c — see listener.h.
 */
#include <arpa/inet.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>

#include "listener.h"
#include "log.h"

/* Pending connections a listening socket holds (the kernel caps it at somaxconn). */
#define LISTEN_BACKLOG 1024

int
listen_unix_socket(const char *path, mode_t mode)
{
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	struct stat		   st;
	int				   fd;

	if (strlen(path) >= sizeof sa.sun_path)
		return -ENAMETOOLONG;
	strcpy(sa.sun_path, path);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0)
		return -errno;
	if (lstat(path, &st) == 0 && !S_ISDIR(st.st_mode))
		unlink(path); /* a stale socket of an earlier run */
	if (bind(fd, (struct sockaddr *) &sa, sizeof sa) < 0 || chmod(path, mode) < 0 ||
		listen(fd, LISTEN_BACKLOG) < 0)
	{
		int r = -errno;
		close(fd);
		return r;
	}
	return fd;
}

int
listen_addr_parse(const char *s, struct sockaddr_in *sin)
{
	const char	 *colon = strrchr(s, ':');
	char		  host[64] = "127.0.0.1";
	unsigned long port;
	char		 *end;

	if (colon)
	{
		size_t n = (size_t) (colon - s);
		if (n == 0 || n >= sizeof host)
			return -EINVAL;
		memcpy(host, s, n);
		host[n] = '\0';
		s = colon + 1;
	}
	port = strtoul(s, &end, 10);
	if (!*s || *end || port > 65535) /* 0: the kernel picks a free port */
		return -EINVAL;
	memset(sin, 0, sizeof *sin);
	sin->sin_family = AF_INET;
	sin->sin_port = htons((uint16_t) port);
	if (inet_pton(AF_INET, host, &sin->sin_addr) != 1)
		return -EINVAL;
	if ((ntohl(sin->sin_addr.s_addr) >> 24) != 127)
		log_warning("listening on %s, which is not a loopback address", host);
	return 0;
}

/* Bind sa (IPv4 or IPv6), listen, and report the port bound. */
static int
listen_sockaddr(const struct sockaddr *sa, socklen_t salen, uint16_t *bound)
{
	struct sockaddr_storage got;
	socklen_t				len = sizeof got;
	int						fd, one = 1;

	fd = socket(sa->sa_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0)
		return -errno;
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
	if (sa->sa_family == AF_INET6)
		setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
	if (bind(fd, sa, salen) < 0 || listen(fd, LISTEN_BACKLOG) < 0 ||
		getsockname(fd, (struct sockaddr *) &got, &len) < 0)
	{
		int r = -errno;
		close(fd);
		return r;
	}
	*bound = ntohs(got.ss_family == AF_INET6 ? ((struct sockaddr_in6 *) &got)->sin6_port
											 : ((struct sockaddr_in *) &got)->sin_port);
	return fd;
}

int
listen_tcp_socket(const struct sockaddr_in *sin, uint16_t *bound)
{
	return listen_sockaddr((const struct sockaddr *) sin, sizeof *sin, bound);
}

int
listen_inet_socket(const char *addr, uint16_t port, uint16_t *bound)
{
	struct sockaddr_in	sin = {.sin_family = AF_INET, .sin_port = htons(port)};
	struct sockaddr_in6 sin6 = {.sin6_family = AF_INET6, .sin6_port = htons(port)};

	if (inet_pton(AF_INET, addr, &sin.sin_addr) == 1)
		return listen_sockaddr((struct sockaddr *) &sin, sizeof sin, bound);
	if (inet_pton(AF_INET6, addr, &sin6.sin6_addr) == 1)
		return listen_sockaddr((struct sockaddr *) &sin6, sizeof sin6, bound);
	return -EINVAL;
}

void
listen_log_port(const char *addr, uint16_t port)
{
	log_notice("listening on %s port %u", addr, (unsigned) port);
}

void
listen_log_tcp(const struct sockaddr_in *sin, uint16_t port)
{
	char addr[INET_ADDRSTRLEN] = "?";

	inet_ntop(AF_INET, &sin->sin_addr, addr, sizeof addr);
	listen_log_port(addr, port);
}

int
ready_file_write(const char *path, uint16_t port)
{
	char text[16];
	int	 n, r;

	if (!path)
		return 0;
	n = port ? snprintf(text, sizeof text, "%u\n", (unsigned) port)
			 : snprintf(text, sizeof text, "\n");
	r = write_file_atomic(AT_FDCWD, path, text, (size_t) n, 0644);
	if (r < 0)
	{
		errno = -r;
		log_error("cannot write the ready file %s: %m", path);
	}
	return r;
}

void
ready_file_remove(const char *path)
{
	if (path && unlink(path) < 0 && errno != ENOENT)
		log_warning("cannot remove the ready file %s: %m", path);
}

static int
start_one(struct mhd_listeners *ls, const char *unix_path, const struct sockaddr_in *sin,
		  const char *what, unsigned flags, unsigned limit, MHD_AccessHandlerCallback on_request,
		  MHD_RequestCompletedCallback on_completed)
{
	struct mhd_listener *l = &ls->l[ls->n];
	uint16_t			 port = 0;
	int					 fd;

	fd = unix_path ? listen_unix_socket(unix_path, 0660) : listen_tcp_socket(sin, &port);
	if (fd < 0)
	{
		errno = -fd;
		log_error("cannot listen on %s: %m", what);
		return fd;
	}
	l->d = MHD_start_daemon(flags, 0, NULL, NULL, on_request, NULL, MHD_OPTION_LISTEN_SOCKET, fd,
							MHD_OPTION_NOTIFY_COMPLETED, on_completed, NULL,
							MHD_OPTION_URI_LOG_CALLBACK, ls->uri_log, NULL,
							MHD_OPTION_CONNECTION_TIMEOUT, (unsigned) 60,
							MHD_OPTION_CONNECTION_LIMIT, limit, MHD_OPTION_END);
	if (!l->d)
	{
		log_error("cannot start the HTTP server on %s", what);
		close(fd);
		return -EIO;
	}
	l->unix_path = unix_path ? strdup(unix_path) : NULL;
	l->quiesced = false;
	ls->n++;
	if (unix_path)
		log_info("listening on unix:%s", unix_path);
	else
	{
		ls->tcp_port = port;
		listen_log_tcp(sin, port);
	}
	return 0;
}

int
mhd_listeners_start(struct mhd_listeners *ls, const char *listen_unix, const char *listen_tcp,
					unsigned flags, unsigned connection_limit, MHD_AccessHandlerCallback on_request,
					MHD_RequestCompletedCallback on_completed)
{
	int r;

	if (listen_unix)
	{
		r = start_one(ls, listen_unix, NULL, listen_unix, flags, connection_limit, on_request,
					  on_completed);
		if (r < 0)
			return r;
	}
	if (listen_tcp)
	{
		struct sockaddr_in sin;
		if (listen_addr_parse(listen_tcp, &sin) < 0)
		{
			log_error("listen_tcp must be PORT or IPV4:PORT, not \"%s\"", listen_tcp);
			return -EINVAL;
		}
		r = start_one(ls, NULL, &sin, listen_tcp, flags, connection_limit, on_request,
					  on_completed);
		if (r < 0)
			return r;
	}
	return 0;
}

void
mhd_listeners_quiesce(struct mhd_listeners *ls)
{
	for (size_t i = 0; i < ls->n; i++)
	{
		struct mhd_listener *l = &ls->l[i];
		if (l->quiesced)
			continue;
		MHD_socket fd = MHD_quiesce_daemon(l->d);
		if (fd != MHD_INVALID_SOCKET)
			close(fd);
		if (l->unix_path)
			unlink(l->unix_path);
		l->quiesced = true;
	}
}

void
mhd_listeners_stop(struct mhd_listeners *ls)
{
	for (size_t i = 0; i < ls->n; i++)
	{
		struct mhd_listener *l = &ls->l[i];
		MHD_stop_daemon(l->d);
		if (l->unix_path && !l->quiesced)
			unlink(l->unix_path);
		free(l->unix_path);
		l->unix_path = NULL;
	}
	ls->n = 0;
}
