/*
 * metrics.c — see metrics.h.  The text grows in an open_memstream(3)
 * buffer; the families written so far are remembered so that none gets
 * its HELP and TYPE twice.
 */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "metrics.h"
#include "nadi_version.h"

#define FAMILIES_MAX 128

struct metrics_out
{
	FILE	   *f;
	char	   *text;
	size_t		len;
	bool		bad; /* a misuse: metrics_end() fails */
	const char *families[FAMILIES_MAX];
	size_t		n_families;
};

void
metrics_histogram_observe(struct metrics_histogram *h, double value)
{
	size_t i = 0;

	while (i < h->n_le && value > h->le[i])
		i++;
	h->counts[i]++;
	h->count++;
	h->sum += value;
}

unsigned
metrics_http_class(unsigned status)
{
	unsigned cls = status / 100;

	return cls >= 1 && cls <= 5 ? cls : 0;
}

static bool
name_valid(const char *s, bool metric)
{
	if (!s || !*s || (*s >= '0' && *s <= '9') || (!metric && strncmp(s, "__", 2) == 0))
		return false;
	for (; *s; s++)
		if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9') ||
			  *s == '_' || (metric && *s == ':')))
			return false;
	return true;
}

/* s with backslash and newline escaped, and the double quote too when quote. */
static void
put_escaped(FILE *f, const char *s, bool quote)
{
	for (; *s; s++)
	{
		if (*s == '\\')
			fputs("\\\\", f);
		else if (*s == '\n')
			fputs("\\n", f);
		else if (quote && *s == '"')
			fputs("\\\"", f);
		else
			fputc(*s, f);
	}
}

/* HELP and TYPE the first time name comes; false when it came before, but not just now. */
static bool
family(struct metrics_out *o, const char *name, const char *type, const char *help)
{
	if (!name_valid(name, true))
	{
		log_error("metrics: invalid metric name \"%s\"", name);
		return false;
	}
	if (o->n_families > 0 && strcmp(o->families[o->n_families - 1], name) == 0)
		return true;
	for (size_t i = 0; i < o->n_families; i++)
		if (strcmp(o->families[i], name) == 0)
		{
			log_error("metrics: the samples of %s are not written together", name);
			return false;
		}
	if (o->n_families == FAMILIES_MAX)
	{
		log_error("metrics: more than %d families", FAMILIES_MAX);
		return false;
	}
	o->families[o->n_families++] = name;
	fprintf(o->f, "# HELP %s ", name);
	put_escaped(o->f, help, false);
	fprintf(o->f, "\n# TYPE %s %s\n", name, type);
	return true;
}

/*
 * NAME[SUFFIX]{labels[,le="LE"]} — the start of a sample line; false on an
 * invalid label name.
 */
static bool
sample_start(struct metrics_out *o, const char *name, const char *suffix, const char *const *labels,
			 const char *le)
{
	bool first = true;

	fprintf(o->f, "%s%s", name, suffix);
	for (size_t i = 0; labels && labels[i]; i += 2)
	{
		if (!name_valid(labels[i], false) || !labels[i + 1])
		{
			log_error("metrics: invalid label on %s", name);
			return false;
		}
		fprintf(o->f, "%s%s=\"", first ? "{" : ",", labels[i]);
		put_escaped(o->f, labels[i + 1], true);
		fputc('"', o->f);
		first = false;
	}
	if (le)
	{
		fprintf(o->f, "%sle=\"%s\"", first ? "{" : ",", le);
		first = false;
	}
	if (!first)
		fputc('}', o->f);
	return true;
}

struct metrics_out *
metrics_begin(const char *daemon)
{
	struct metrics_out *o = calloc(1, sizeof(*o));

	if (!o)
		return NULL;
	o->f = open_memstream(&o->text, &o->len);
	if (!o->f)
	{
		free(o);
		return NULL;
	}
	metrics_gauge(o, "nadi_build_info",
				  "The daemon, its version and the extension version it was built against.",
				  METRICS_LABELS("daemon", daemon, "version", NADI_VERSION, "extension_version",
								 NADI_EXT_VERSION),
				  1);
	return o;
}

/* One sample of a counter or gauge: value is its text. */
static void
scalar(struct metrics_out *o, const char *name, const char *type, const char *help,
	   const char *const *labels, const char *value)
{
	if (o->bad || !family(o, name, type, help) || !sample_start(o, name, "", labels, NULL))
	{
		o->bad = true;
		return;
	}
	fprintf(o->f, " %s\n", value);
}

void
metrics_counter(struct metrics_out *o, const char *name, const char *help,
				const char *const *labels, uint64_t value)
{
	char text[32];

	snprintf(text, sizeof(text), "%llu", (unsigned long long) value);
	scalar(o, name, "counter", help, labels, text);
}

void
metrics_gauge(struct metrics_out *o, const char *name, const char *help, const char *const *labels,
			  double value)
{
	char text[32];

	snprintf(text, sizeof(text), "%.17g", value);
	scalar(o, name, "gauge", help, labels, text);
}

void
metrics_counter_f(struct metrics_out *o, const char *name, const char *help,
				  const char *const *labels, double value)
{
	char text[32];

	snprintf(text, sizeof(text), "%.17g", value);
	scalar(o, name, "counter", help, labels, text);
}

void
metrics_histogram(struct metrics_out *o, const char *name, const char *help,
				  const char *const *labels, const struct metrics_histogram *h)
{
	uint64_t cumulative = 0;
	char	 le[32];

	if (o->bad || h->n_le > METRICS_BUCKETS_MAX || !family(o, name, "histogram", help))
	{
		o->bad = true;
		return;
	}
	for (size_t i = 0; i <= h->n_le; i++)
	{
		cumulative += h->counts[i];
		if (i < h->n_le)
			snprintf(le, sizeof(le), "%g", h->le[i]);
		if (!sample_start(o, name, "_bucket", labels, i < h->n_le ? le : "+Inf"))
		{
			o->bad = true;
			return;
		}
		fprintf(o->f, " %llu\n", (unsigned long long) cumulative);
	}
	(void) sample_start(o, name, "_sum", labels, NULL);
	fprintf(o->f, " %.17g\n", h->sum);
	(void) sample_start(o, name, "_count", labels, NULL);
	fprintf(o->f, " %llu\n", (unsigned long long) h->count);
}

void
metrics_http_codes(struct metrics_out *o, const char *name, const char *help,
				   const uint64_t counts[METRICS_HTTP_CLASSES])
{
	static const char *const codes[METRICS_HTTP_CLASSES] = {"other", "1xx", "2xx",
															"3xx",	 "4xx", "5xx"};

	for (unsigned c = 1; c <= METRICS_HTTP_CLASSES; c++)
		metrics_counter(o, name, help, METRICS_LABELS("code", codes[c % METRICS_HTTP_CLASSES]),
						counts[c % METRICS_HTTP_CLASSES]);
}

char *
metrics_end(struct metrics_out *o, size_t *len)
{
	char *text;
	bool  ok;

	ok = !ferror(o->f) && !o->bad;
	ok = fclose(o->f) == 0 && ok && o->text != NULL;
	text = o->text;
	if (len)
		*len = o->len;
	free(o);
	if (!ok)
	{
		free(text);
		return NULL;
	}
	return text;
}
