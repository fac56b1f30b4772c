/*
 * http.h - what a failed request says about the receiver, in one place:
 * post-batch, classify and sluice-snapshot all name failures the same way.
 */
#ifndef SLUICE_HTTP_H
#define SLUICE_HTTP_H

#include <curl/curl.h>

/* The kind of a transport error: timeout, connect, dns, tls, reset, other. */
const char *transport_kind(CURLcode code);
/* The category of a transport error kind: timeout, dns, tls, or connection. */
const char *transport_category(const char *kind);
/* The category of an HTTP status that says nothing about the events (the
 * receiver is unhealthy, or we may not use it): auth_expired (401),
 * forbidden (403), not_found (404), timeout (408), rate_limited (429),
 * server_error (5xx), unexpected_status (1xx, 3xx); NULL for 2xx and for
 * the 4xx that are verdicts on what was sent. */
const char *http_batch_category(long status);

#endif
