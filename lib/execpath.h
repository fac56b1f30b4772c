/*
 * execpath.h - where the sluice programs are, so they can run each other.
 *
 * $SLUICE_EXEC_PATH when set; else ../libexec/sluice next to the running
 * program (installed); else the running program's own directory (bin/ of
 * the repository).
 */
#ifndef SLUICE_EXECPATH_H
#define SLUICE_EXECPATH_H

#include <stddef.h>

const char *exec_dir(void);
/* exec_dir()/name into buf; returns buf. */
char *exec_program(const char *name, char *buf, size_t size);

#endif
