/*
 * sandbox.c — latency driver behind bench/sandbox.  Talks to a running
 * nadi-sandboxd over HTTP with libcurl (one reused connection, so the
 * numbers are the daemon's, not a client's start-up) and times:
 *
 *   cold    create sandbox (snapshot) + first echo (starts the container) + destroy
 *   warm    echo in a sandbox whose container is up
 *   cp -a   copy of the image tree (what a snapshot replaces), with and without reflinks
 *   exec    plain fork/exec of the same command on the host
 *   pool    (--pool) create → first echo when the daemon keeps a warm pool:
 *           the sandbox takes a running container; between iterations the
 *           driver waits (untimed) until the pool has a ready entry again
 *
 * usage: sandbox URL TOKEN IMAGE IMAGE_PATH SCRATCH N_COLD N_WARM N_COPY LABEL
 *        sandbox --pool URL TOKEN IMAGE N LABEL [TENANT]
 * Prints one table row per case: label, case, n, p50, p99, mean (ms).
 */
#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static CURL *curl;
static const char *base, *token;
static char *resp;
static size_t resp_len;

static double
now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static size_t
on_data(char *p, size_t size, size_t n, void *ud)
{
	char *nr = realloc(resp, resp_len + size * n + 1);
	(void)ud;

	if (!nr)
		return 0;
	resp = nr;
	memcpy(resp + resp_len, p, size * n);
	resp_len += size * n;
	resp[resp_len] = '\0';
	return size * n;
}

/* One request; returns the HTTP status and leaves the body in resp. */
static long
request(const char *method, const char *path, const char *body)
{
	char url[1024], auth[512];
	struct curl_slist *h = NULL;
	long status = 0;

	snprintf(url, sizeof url, "%s%s", base, path);
	snprintf(auth, sizeof auth, "Authorization: Bearer %s", token);
	h = curl_slist_append(h, auth);
	h = curl_slist_append(h, "Content-Type: application/json");
	resp_len = 0;
	curl_easy_setopt(curl, CURLOPT_URL, url);
	curl_easy_setopt(curl, CURLOPT_CUSTOMREQUEST, method);
	curl_easy_setopt(curl, CURLOPT_HTTPHEADER, h);
	curl_easy_setopt(curl, CURLOPT_POSTFIELDS, body ? body : "");
	curl_easy_setopt(curl, CURLOPT_POSTFIELDSIZE, (long)(body ? strlen(body) : 0));
	curl_easy_setopt(curl, CURLOPT_NOBODY, 0L);
	if (curl_easy_perform(curl) == CURLE_OK)
		curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &status);
	curl_slist_free_all(h);
	return status;
}

static int
cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y;
}

static void
report(const char *label, const char *name, double *v, int n)
{
	double sum = 0;

	if (n == 0) {
		printf("| %-6s | %-44s | %5d | %9s | %9s | %9s |\n", label, name, 0, "-", "-", "-");
		return;
	}
	qsort(v, (size_t)n, sizeof *v, cmp_double);
	for (int i = 0; i < n; i++)
		sum += v[i];
	int p99 = (int)((double)n * 0.99 + 0.5) - 1;
	if (p99 < 0)
		p99 = 0;
	if (p99 >= n)
		p99 = n - 1;
	printf("| %-6s | %-44s | %5d | %9.2f | %9.2f | %9.2f |\n", label, name, n, v[n / 2], v[p99], sum / n);
	fflush(stdout);
}

static char *
field(const char *key)
{
	json_t *j = json_loads(resp ? resp : "", 0, NULL);
	const char *s = json_string_value(json_object_get(j, key));
	char *r = s ? strdup(s) : NULL;

	json_decref(j);
	return r;
}

/* Run argv with stdout into a pipe; returns the time until it was reaped. */
static double
fork_exec(char *const argv[])
{
	int p[2];
	char buf[256];
	double t0 = now_ms();
	pid_t pid;

	if (pipe(p) < 0)
		return -1;
	pid = fork();
	if (pid == 0) {
		dup2(p[1], 1);
		close(p[0]);
		close(p[1]);
		execv(argv[0], argv);
		_exit(127);
	}
	close(p[1]);
	while (read(p[0], buf, sizeof buf) > 0)
		;
	close(p[0]);
	waitpid(pid, NULL, 0);
	return now_ms() - t0;
}

/*
 * POST body to /v1/sandboxes, then the first echo in the new sandbox; each
 * answer must hold its want_* text (NULL: anything).  *created is when the
 * create answered.  The sandbox id, or NULL (said on stderr).
 */
static char *
create_then_echo(const char *body, const char *want_create, const char *want_echo, double *created)
{
	char path[512], *id;

	if (request("POST", "/v1/sandboxes", body) != 201 || (want_create && !strstr(resp, want_create)) ||
	    !(id = field("id"))) {
		fprintf(stderr, "create failed: %s\n", resp ? resp : "");
		return NULL;
	}
	*created = now_ms();
	snprintf(path, sizeof path, "/v1/sandboxes/%s/tools/echo", id);
	if (request("POST", path, "{\"args\":{\"text\":\"hello\"}}") != 200 || !strstr(resp, want_echo)) {
		fprintf(stderr, "first echo failed (or not %s): %s\n", want_echo, resp ? resp : "");
		free(id);
		return NULL;
	}
	return id;
}

/* Ready entries of image in the pool, as GET /healthz says; -1 on error. */
static long
pool_ready(const char *image)
{
	json_t *j;
	long n = -1;

	if (request("GET", "/healthz", NULL) != 200)
		return -1;
	j = json_loads(resp, 0, NULL);
	json_t *r = json_object_get(json_object_get(json_object_get(json_object_get(j, "pool"), "images"), image), "ready");
	if (json_is_integer(r))
		n = (long)json_integer_value(r);
	json_decref(j);
	return n;
}

/* create → first command from the warm pool */
static int
pool_main(const char *image, int n, const char *label, const char *tenant)
{
	double *v = calloc((size_t)n + 1, sizeof *v), *v2 = calloc((size_t)n + 1, sizeof *v),
	       *v3 = calloc((size_t)n + 1, sizeof *v);
	char body[512], path[512], *id;
	int k;

	for (k = 0; k < n; k++) {
		double t0, t1, t2, until = now_ms() + 60000;
		while (pool_ready(image) < 1) {
			if (now_ms() > until) {
				fprintf(stderr, "the pool did not refill in 60 s\n");
				return 1;
			}
			usleep(2000);
		}
		snprintf(body, sizeof body, "{\"session_id\":\"bench-pool-%s-%d-%d\",\"image\":\"%s\"%s%s%s}", label, (int)getpid(), k,
			 image, tenant ? ",\"tenant\":\"" : "", tenant ? tenant : "", tenant ? "\"" : "");
		t0 = now_ms();
		if (!(id = create_then_echo(body, "\"from_pool\":true", "\"cold\":false", &t1)))
			return 1;
		t2 = now_ms();
		v[k] = t2 - t0;
		v2[k] = t1 - t0;
		v3[k] = t2 - t1;
		snprintf(path, sizeof path, "/v1/sandboxes/%s", id);
		if (request("DELETE", path, NULL) != 204) {
			fprintf(stderr, "delete failed: %s\n", resp ? resp : "");
			return 1;
		}
		free(id);
	}
	report(label, tenant ? "pool, tenant: create -> first command" : "pool: create -> first command", v, k);
	report(label, tenant ? "  of which create (+ mount tenant's mirrors)" : "  of which create (takes a warm entry)", v2, k);
	report(label, "  of which first echo (warm)", v3, k);
	return 0;
}

int
main(int argc, char **argv)
{
	const char *image, *image_path, *scratch, *label;
	int n_cold, n_warm, n_copy, k;
	double *v, *v2, *v3, *v4, *v5;
	char body[512], path[512];
	char *id;

	if ((argc == 7 || argc == 8) && strcmp(argv[1], "--pool") == 0) {
		int r;
		base = argv[2];
		token = argv[3];
		curl_global_init(CURL_GLOBAL_DEFAULT);
		curl = curl_easy_init();
		curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, on_data);
		curl_easy_setopt(curl, CURLOPT_TCP_NODELAY, 1L);
		r = pool_main(argv[4], atoi(argv[5]), argv[6], argc == 8 ? argv[7] : NULL);
		curl_easy_cleanup(curl);
		curl_global_cleanup();
		return r;
	}
	if (argc != 10) {
		fprintf(stderr, "usage: %s URL TOKEN IMAGE IMAGE_PATH SCRATCH N_COLD N_WARM N_COPY LABEL\n", argv[0]);
		return 2;
	}
	base = argv[1];
	token = argv[2];
	image = argv[3];
	image_path = argv[4];
	scratch = argv[5];
	n_cold = atoi(argv[6]);
	n_warm = atoi(argv[7]);
	n_copy = atoi(argv[8]);
	label = argv[9];
	curl_global_init(CURL_GLOBAL_DEFAULT);
	curl = curl_easy_init();
	curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, on_data);
	curl_easy_setopt(curl, CURLOPT_TCP_NODELAY, 1L);
	v = calloc((size_t)(n_cold + n_warm + n_copy + 16), sizeof *v);
	v2 = calloc((size_t)(n_cold + 16), sizeof *v);
	v3 = calloc((size_t)(n_cold + 16), sizeof *v);
	v4 = calloc((size_t)(n_cold + 16), sizeof *v);
	v5 = calloc((size_t)(n_cold + 16), sizeof *v);

	/* cold: snapshot + container start + echo + destroy */
	k = 0;
	for (int i = 0; i < n_cold; i++) {
		double t0, t1, t2;
		snprintf(body, sizeof body, "{\"session_id\":\"bench-%s-%d-%d\",\"image\":\"%s\"}", label, (int)getpid(), i, image);
		t0 = now_ms();
		if (!(id = create_then_echo(body, NULL, "\"cold\":true", &t1)))
			return 1;
		t2 = now_ms();
		snprintf(path, sizeof path, "/v1/sandboxes/%s", id);
		if (request("DELETE", path, NULL) != 204) {
			fprintf(stderr, "delete failed: %s\n", resp ? resp : "");
			return 1;
		}
		v[k] = now_ms() - t0;
		v2[k] = t1 - t0;
		v3[k] = t2 - t1;
		v4[k] = now_ms() - t2;
		v5[k] = t2 - t0;
		k++;
		free(id);
	}
	report(label, "cold: create+start+echo+destroy", v, k);
	report(label, "  of which create (btrfs snapshot)", v2, k);
	report(label, "  of which first echo (nspawn start + call)", v3, k);
	report(label, "  of which destroy (stop + delete subvolume)", v4, k);
	report(label, "cold: create -> first command", v5, k);

	/* warm: echo in a running container */
	snprintf(body, sizeof body, "{\"session_id\":\"bench-warm-%s-%d\",\"image\":\"%s\"}", label, (int)getpid(), image);
	if (request("POST", "/v1/sandboxes", body) != 201 || !(id = field("id")))
		return 1;
	snprintf(path, sizeof path, "/v1/sandboxes/%s/tools/echo", id);
	request("POST", path, "{\"args\":{\"text\":\"warm-up\"}}");
	for (k = 0; k < n_warm; k++) {
		double t0 = now_ms();
		if (request("POST", path, "{\"args\":{\"text\":\"hello\"}}") != 200 || !strstr(resp, "\"cold\":false")) {
			fprintf(stderr, "warm echo failed: %s\n", resp ? resp : "");
			return 1;
		}
		v[k] = now_ms() - t0;
	}
	report(label, "warm: echo in a running sandbox", v, k);
	snprintf(path, sizeof path, "/v1/sandboxes/%s", id);
	request("DELETE", path, NULL);
	free(id);

	/* cp -a of the image, beside the store (same file system) */
	for (int reflink = 1; reflink >= 0; reflink--) {
		for (k = 0; k < n_copy; k++) {
			char dst[600], arg[32];
			snprintf(dst, sizeof dst, "%s/copy-%d", scratch, k);
			snprintf(arg, sizeof arg, "--reflink=%s", reflink ? "auto" : "never");
			char *cp[] = {"/bin/cp", "-a", arg, (char *)image_path, dst, NULL};
			v[k] = fork_exec(cp);
			char *rm[] = {"/bin/rm", "-rf", dst, NULL};
			fork_exec(rm);
		}
		report(label, reflink ? "cp -a image (reflink=auto, coreutils default)" : "cp -a image (--reflink=never)", v, k);
	}

	/* plain fork/exec of the same command on the host */
	for (k = 0; k < n_warm; k++) {
		char *cmd[] = {"/bin/busybox", "printf", "%s", "hello", NULL};
		v[k] = fork_exec(cmd);
	}
	report(label, "fork/exec busybox printf (host, no sandbox)", v, k);

	curl_easy_cleanup(curl);
	curl_global_cleanup();
	free(resp);
	return 0;
}
