/*
 * bigbody - a test receiver that answers every POST with 200 and a body of
 * BYTES bytes, streamed from a small buffer (stub-receiver cannot do that).
 * For t/93-resources.bats: a client must read such an answer with bounded
 * memory and report a clear outcome.
 *
 *   bigbody PORTFILE BYTES
 *
 * Listens on 127.0.0.1 (a free port, written to PORTFILE once listening,
 * through PORTFILE.tmp and rename), answers requests one connection at a
 * time, and exits by itself after 300 s. The body is the start of a batch
 * answer that never ends: {"results":[{"event_id":"x","status":"success"},...
 */
#define _DEFAULT_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

static int
write_all(int fd, const char *p, size_t n)
{
	while (n > 0) {
		ssize_t w = write(fd, p, n);

		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			return -1;
		p += w;
		n -= (size_t)w;
	}
	return 0;
}

/* Reads the request: headers, then Content-Length bytes of body. */
static int
read_request(int fd)
{
	char buf[65536];
	size_t have = 0;
	long long body = 0, got;
	char *end = NULL, *cl;

	while (!end) {
		ssize_t r;

		if (have == sizeof buf - 1)
			return -1;
		r = read(fd, buf + have, sizeof buf - 1 - have);
		if (r <= 0)
			return -1;
		have += (size_t)r;
		buf[have] = '\0';
		end = strstr(buf, "\r\n\r\n");
	}
	for (cl = buf; (cl = strchr(cl, '\n')) != NULL; cl++)
		if (strncasecmp(cl + 1, "content-length:", 15) == 0)
			body = atoll(cl + 16);
	got = (long long)(have - (size_t)(end + 4 - buf));
	while (got < body) {
		ssize_t r = read(fd, buf, sizeof buf);

		if (r <= 0)
			return -1;
		got += r;
	}
	return 0;
}

int
main(int argc, char **argv)
{
	struct sockaddr_in a = { .sin_family = AF_INET };
	socklen_t alen = sizeof a;
	char tmp[4096], head[256], chunk[65536];
	const char *item = "{\"event_id\":\"x\",\"status\":\"success\"},";
	long long bytes;
	FILE *f;
	int s, one = 1;

	if (argc != 3) {
		fprintf(stderr, "usage: bigbody PORTFILE BYTES\n");
		return 64;
	}
	bytes = atoll(argv[2]);
	signal(SIGPIPE, SIG_IGN);
	alarm(300);
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	s = socket(AF_INET, SOCK_STREAM, 0);
	if (s < 0 || setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) != 0 ||
	    bind(s, (struct sockaddr *)&a, sizeof a) != 0 || listen(s, 8) != 0 ||
	    getsockname(s, (struct sockaddr *)&a, &alen) != 0) {
		perror("bigbody: listen");
		return 69;
	}
	snprintf(tmp, sizeof tmp, "%s.tmp", argv[1]);
	if (!(f = fopen(tmp, "w")) || fprintf(f, "%d\n", ntohs(a.sin_port)) < 0 || fclose(f) != 0 ||
	    rename(tmp, argv[1]) != 0) {
		perror("bigbody: port file");
		return 74;
	}
	for (size_t i = 0; i + strlen(item) <= sizeof chunk; i += strlen(item))
		memcpy(chunk + i, item, strlen(item));
	for (;;) {
		int c = accept(s, NULL, NULL);
		long long left;
		int n;

		if (c < 0) {
			if (errno == EINTR)
				continue;
			perror("bigbody: accept");
			return 74;
		}
		if (read_request(c) == 0) {
			n = snprintf(head, sizeof head, "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
			    "Content-Length: %lld\r\nConnection: close\r\n\r\n{\"results\":[", bytes);
			left = bytes - 12;
			if (write_all(c, head, (size_t)n) == 0) {
				while (left > 0) {
					size_t k = left < (long long)sizeof chunk ? (size_t)left :
					    sizeof chunk - sizeof chunk % strlen(item);

					if (write_all(c, chunk, k) != 0)
						break; /* the client gave up: fine */
					left -= (long long)k;
				}
			}
		}
		close(c);
	}
}
