/*
 * listen.h — the sockets clients connect to and the connections they make.
 * The main listener (TCP and/or unix socket) serves cells; one unix socket
 * per sandbox, SANDBOX_DIR/<id>/proxy.sock, appears when nadi-sandboxd
 * makes SANDBOX_DIR/<id>/ and goes when it removes it.  A connection
 * accepted on a sandbox's socket carries that sandbox's id: the peer cannot
 * choose it.  Accepting happens on the main thread's event loop; each
 * accepted socket is handed to libmicrohttpd (http_add_connection).
 */
#ifndef CP_LISTEN_H
#define CP_LISTEN_H

#include <stdbool.h>
#include <stdint.h>

#include "daemonlib/http.h"

/* Something the main loop's epoll watches. */
struct watch
{
	int fd;
	void (*cb)(struct watch *w, uint32_t events);
	bool late; /* may close other watches: runs after the rest of its epoll batch */
};

struct sandbox;

/* One client connection, from accept to close (MHD's socket context). */
struct client
{
	int				fd;
	struct sandbox *sbx;		/* NULL: the main listener */
	bool			over_limit; /* accepted beyond max_connections or the sandbox's share */
	HttpAccess		access;		/* the request being served (one at a time on a connection) */
	struct client  *next;		/* in the list of accepted, not yet started, clients */
};

int		 listen_init(int epoll_fd);
uint16_t listen_tcp_port(void); /* the main listener's TCP port (0: none) */
/* Stop accepting: close every listening socket and remove the socket files. */
void	 listen_stop(void);
unsigned listen_sandbox_count(void);
unsigned listen_client_count(void);

const char *sandbox_id(const struct sandbox *s);

/*
 * libmicrohttpd's connection notifications: started takes over the client
 * accepted on fd and counts it against the limits; closed lets it go.
 */
struct client *client_started(int fd);
void		   client_closed(struct client *c);

#endif
