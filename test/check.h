/*
 * check.h — the checks of the C unit tests (test/runtime_test.c,
 * test/cellhost_test.c): CHECK(cond) counts a pass or prints the failure
 * with its file and line; check_summary() prints "N passed, M failed" and
 * gives the exit status.
 */
#ifndef NADI_TEST_CHECK_H
#define NADI_TEST_CHECK_H

#include <stdio.h>

static int	passed,
			failed;

#define CHECK(cond) check((cond), #cond, __FILE__, __LINE__)

static void
check(int ok, const char *what, const char *file, int line)
{
	if (ok)
		passed++;
	else
	{
		failed++;
		printf("FAIL %s:%d: %s\n", file, line, what);
	}
}

static int
check_summary(void)
{
	printf("%d passed, %d failed\n", passed, failed);
	return failed ? 1 : 0;
}

#endif							/* NADI_TEST_CHECK_H */
