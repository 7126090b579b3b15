/*
 * listener.h — listening sockets of the Nadi daemons: a unix
 * socket (a stale socket of an earlier run is replaced), "PORT" or
 * "IPV4:PORT" (loopback unless told otherwise), and the pair of
 * libmicrohttpd daemons sandboxd and gitd serve their API on.
 */
#ifndef NADI_DAEMONLIB_LISTENER_H
#define NADI_DAEMONLIB_LISTENER_H

#include <microhttpd.h>
#include <netinet/in.h>

#include "util.h"

/* A bound, listening, non-blocking unix socket of that mode; -errno. */
int listen_unix_socket(const char *path, mode_t mode);
/*
 * "PORT" (127.0.0.1) or "IPV4:PORT"; warns when the address is not loopback.
 * Port 0 asks the kernel for a free port: the bound one is what
 * listen_tcp_socket() reports.
 */
int listen_addr_parse(const char *spec, struct sockaddr_in *sin);
/* A bound, listening, non-blocking TCP socket; *bound gets its port; -errno. */
int listen_tcp_socket(const struct sockaddr_in *sin, uint16_t *bound);
/*
 * The same on an IPv4 or IPv6 address literal and a port (0: the kernel
 * picks); -EINVAL when addr is neither.  IPv6 sockets are IPv6 only.
 */
int listen_inet_socket(const char *addr, uint16_t port, uint16_t *bound);
/* The log line harnesses wait for: "listening on ADDR port N" (notice). */
void listen_log_tcp(const struct sockaddr_in *sin, uint16_t port);
void listen_log_port(const char *addr, uint16_t port);
/*
 * --ready-file: once the daemon serves, PATH gets the bound TCP port and a
 * newline (an empty line when it listens on a unix socket only), written
 * atomically (a temporary file beside it, renamed), so whoever sees the
 * file reads the whole port.  NULL path: nothing.  Removed at exit.
 */
int	 ready_file_write(const char *path, uint16_t port);
void ready_file_remove(const char *path);

struct mhd_listener
{
	struct MHD_Daemon *d;
	char			  *unix_path;
	bool			   quiesced;
};

struct mhd_listeners
{
	struct mhd_listener l[2];
	size_t				n;
	uint16_t			tcp_port; /* the port listen_tcp is bound to (0: none) */
	/*
	 * Optional: MHD_OPTION_URI_LOG_CALLBACK, called with the request target
	 * as received (before MHD decodes it); what it returns becomes the
	 * request's *con_cls.
	 */
	void *(*uri_log)(void *cls, const char *uri, struct MHD_Connection *conn);
};

/*
 * An MHD daemon on listen_unix (mode 0660) and one on listen_tcp, each
 * that is set; connections time out after 60 s idle.  Logs what fails and
 * what listens; on failure the daemons already started stay in *ls for
 * mhd_listeners_stop().
 */
int
mhd_listeners_start(struct mhd_listeners *ls, const char *listen_unix, const char *listen_tcp,
					unsigned flags, unsigned connection_limit, MHD_AccessHandlerCallback on_request,
					MHD_RequestCompletedCallback on_completed);
/* Stop accepting connections (the unix socket goes); open ones stay. */
void mhd_listeners_quiesce(struct mhd_listeners *ls);
void mhd_listeners_stop(struct mhd_listeners *ls);

#endif
