/*
 * files.c — `nadi files put|get SESSION PATH [FILE]`: a file into or out of
 * the session's sandbox (PUT/GET /v1/sessions/{id}/files/{path}), streamed
 * both ways (libcurl reads FILE as it sends, writes the answer as it comes).
 * FILE is - or absent for stdin/stdout.  A GET opens FILE only once the
 * answer is a success, so a refused one leaves no file behind.  PATH is
 * relative to the sandbox's workspace; each of its names is escaped, and
 * the edge checks the whole (docs/HTTP_API.md, "Files").
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <curl/curl.h>

#include "cli.h"
#include "daemonlib/util.h"

#define PATH_MAX_BYTES 4096

typedef struct Xfer
{
	CURL	   *c;
	const char *file; /* GET: where to write; NULL or "-": stdout */
	FILE	   *out;
	bool		failed_open;
	bool		keep;	/* PUT: the answer (JSON) is kept, whatever its status */
	Answer		answer; /* the body of an answer that is not a success (or kept) */
} Xfer;

static size_t
get_body(char *p, size_t size, size_t n, void *arg)
{
	Xfer  *x = arg;
	size_t len = size * n;
	long   status = 0;

	curl_easy_getinfo(x->c, CURLINFO_RESPONSE_CODE, &status);
	if (x->keep || status < 200 || status >= 300)
		return answer_append(p, size, n, &x->answer);
	if (x->out == NULL)
	{
		x->out = x->file && strcmp(x->file, "-") != 0 ? fopen(x->file, "wbx") : stdout;
		if (x->out == NULL)
		{
			x->failed_open = true;
			return 0;
		}
	}
	return fwrite(p, 1, len, x->out) == len ? len : 0;
}

/* /v1/sessions/SID/files/ and PATH with each name escaped (empty ones kept): a new string */
static char *
files_url_path(const char *sid, const char *path)
{
	size_t cap = strlen(path) * 3 + 64, len;
	char  *u = malloc(cap);

	if (u == NULL)
		abort();
	len = (size_t) snprintf(u, cap, "/v1/sessions/%s/files", sid);
	for (const char *p = path;; p++)
	{
		size_t n = strcspn(p, "/");
		char  *name = strndup(p, n), *e;

		if (name == NULL)
			abort();
		e = seg(name);
		len += (size_t) snprintf(u + len, cap - len, "/%s", e);
		free(e);
		free(name);
		p += n;
		if (*p == '\0')
			break;
	}
	return u;
}

/*
 * What goes into the URL, checked first: 1 to 4096 bytes, relative, no
 * control character (the edge refuses the rest: ".." and so on).
 */
static int
check_path(const char *path)
{
	size_t n = strlen(path);

	if (n == 0 || n > PATH_MAX_BYTES)
		return cli_err(EXIT_USAGE, "PATH must be 1 to %d bytes", PATH_MAX_BYTES);
	if (path[0] == '/')
		return cli_err(EXIT_USAGE, "PATH is relative to the sandbox's workspace: no leading '/'");
	for (const char *p = path; *p; p++)
		if ((unsigned char) *p < 0x20 || *p == 0x7f)
			return cli_err(EXIT_USAGE, "PATH holds a control character");
	return 0;
}

int
cmd_files(int argc, char **argv)
{
	static const struct option opts[] = {{"json", no_argument, NULL, 'j'}, {NULL, 0, NULL, 0}};
	_cleanup_(freep) char	  *url = NULL, *path = NULL;
	struct curl_slist		  *h = NULL;
	char					   errbuf[CURL_ERROR_SIZE] = "";
	Xfer					   x = {0};
	FILE					  *in = NULL;
	bool					   put, json = false;
	const char				  *file;
	CURLcode				   rc;
	long					   status = 0;
	int						   o, r;

	if (wants_help(argc, argv))
		return usage("files", true);
	while ((o = getopt_long(argc, argv, "h", opts, NULL)) != -1)
		if (o == 'j')
			json = true;
		else
			return usage("files", false);
	argc -= optind;
	argv += optind;
	if (argc < 3 || argc > 4 || (strcmp(argv[0], "put") != 0 && strcmp(argv[0], "get") != 0))
		return usage("files", false);
	put = strcmp(argv[0], "put") == 0;
	if (!uuid_text_valid(argv[1]))
		return cli_err(EXIT_USAGE, "not a session id (a UUID): %.64s", argv[1]);
	if ((r = check_path(argv[2])) != 0)
		return r;
	file = argc == 4 ? argv[3] : "-";
	path = files_url_path(argv[1], argv[2]);
	url = xasprintf("%s%s", cli_cfg.url, path);
	if ((x.c = curl_easy_init()) == NULL)
		return cli_err(EXIT_ERROR, "out of memory");
	h = api_headers(NULL);
	curl_easy_setopt(x.c, CURLOPT_URL, url);
	curl_easy_setopt(x.c, CURLOPT_ERRORBUFFER, errbuf);
	curl_easy_setopt(x.c, CURLOPT_PROTOCOLS_STR, "http,https");
	/* a "." or ".." in PATH reaches the edge, which refuses it */
	curl_easy_setopt(x.c, CURLOPT_PATH_AS_IS, 1L);
	curl_easy_setopt(x.c, CURLOPT_CONNECTTIMEOUT, 10L);
	curl_easy_setopt(x.c, CURLOPT_NOSIGNAL, 1L);
	if (put)
	{
		struct stat st;

		in = strcmp(file, "-") == 0 ? stdin : fopen(file, "rb");
		if (in == NULL)
		{
			curl_slist_free_all(h);
			curl_easy_cleanup(x.c);
			return cli_err(EXIT_USAGE, "%s: %m", file);
		}
		h = curl_slist_append(h, "Content-Type: application/octet-stream");
		h = curl_slist_append(h, "Expect:");
		curl_easy_setopt(x.c, CURLOPT_UPLOAD, 1L);
		curl_easy_setopt(x.c, CURLOPT_READDATA, in);
		if (fstat(fileno(in), &st) == 0 && S_ISREG(st.st_mode))
			curl_easy_setopt(x.c, CURLOPT_INFILESIZE_LARGE, (curl_off_t) st.st_size);
		x.keep = true;
	}
	else
		x.file = file;
	curl_easy_setopt(x.c, CURLOPT_WRITEFUNCTION, get_body);
	curl_easy_setopt(x.c, CURLOPT_WRITEDATA, &x);
	curl_easy_setopt(x.c, CURLOPT_HTTPHEADER, h);
	rc = curl_easy_perform(x.c);
	curl_easy_getinfo(x.c, CURLINFO_RESPONSE_CODE, &status);
	curl_slist_free_all(h);
	curl_easy_cleanup(x.c);
	if (in && in != stdin)
		fclose(in);
	if (x.out && x.out != stdout && fclose(x.out) != 0)
		r = cli_err(EXIT_ERROR, "%s: %m", file);
	else if (x.out == stdout && fflush(stdout) != 0)
		r = cli_err(EXIT_ERROR, "standard output: %m");
	else if (x.failed_open)
		r = cli_err(EXIT_ERROR, "%s: %m (it must not exist yet)", file);
	else if (status < 200 || status >= 300)
		r = status ? problem_print(status, x.answer.body, x.answer.len)
				   : cli_err(EXIT_UNAVAILABLE, "no answer from %s: %s", cli_cfg.url,
							 errbuf[0] ? errbuf : curl_easy_strerror(rc));
	else if (rc != CURLE_OK)
		r = cli_err(EXIT_UNAVAILABLE, "the transfer broke off: %s",
					errbuf[0] ? errbuf : curl_easy_strerror(rc));
	else
		r = EXIT_OK;
	if (r == EXIT_OK && put && json && x.answer.body)
	{
		fwrite(x.answer.body, 1, x.answer.len, stdout);
		putchar('\n');
	}
	free(x.answer.body);
	return r;
}
