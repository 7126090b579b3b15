/*
 * validate.c — what may be mirrored.  (What may be a repository name is
 * repo_name_valid() in daemonlib/util.c, shared with sandboxd's git_clone.)
 * URLs are handed to git, so anything git would read as an option or as a command
 * to run (the ext:: transport, other "helper::address" forms) is refused,
 * and so are credentials in a URL: the mirror is readable by every sandbox.
 */
#include <string.h>

#include "gitd.h"

static bool
scheme_char(char c, bool first)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
		   (!first && ((c >= '0' && c <= '9') || c == '+' || c == '-' || c == '.'));
}

const char *
repo_url_problem(const char *url)
{
	static const char *schemes[] = {"file://", "http://", "https://", "ssh://", "git://"};
	const char		  *rest = NULL, *p;
	size_t			   n;

	if (!url || !*url)
		return "the url is empty";
	n = strlen(url);
	if (n > GITD_URL_MAX)
		return "the url is longer than 4096 bytes";
	if (url[0] == '-')
		return "the url must not start with '-' (git would read it as an option)";
	for (size_t i = 0; i < n; i++)
		if ((unsigned char) url[i] < 0x20 || url[i] == 0x7f)
			return "the url contains control characters";
	/* "helper::address" runs a remote helper; ext:: runs any command. */
	for (p = url; scheme_char(*p, p == url); p++)
		;
	if (strncmp(p, "::", 2) == 0)
		return strncmp(url, "ext::", 5) == 0
				   ? "the ext:: transport runs commands and is refused"
				   : "remote-helper urls (transport::address) are refused";
	if (url[0] == '/')
		return NULL;
	for (size_t i = 0; i < ARRAY_SIZE(schemes); i++)
		if (strncmp(url, schemes[i], strlen(schemes[i])) == 0)
		{
			rest = url + strlen(schemes[i]);
			break;
		}
	if (!rest)
		return "unsupported url: use an absolute path, file://, http://, https://, ssh:// or "
			   "git://";
	if (strncmp(url, "file://", 7) == 0)
		return rest[0] == '/' ? NULL : "a file:// url needs an absolute path (file:///path)";
	size_t auth = strcspn(rest, "/");
	if (auth == 0)
		return "the url has no host";
	const char *at = memchr(rest, '@', auth);
	if (at && (url[0] == 'h' || memchr(rest, ':', (size_t) (at - rest))))
		return "credentials in the url would be readable by every sandbox (the mirror keeps its "
			   "url); "
			   "give the daemon's user a credential helper, .netrc or an ssh key instead";
	return NULL;
}
