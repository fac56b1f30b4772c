/* http.c - see http.h */
#include "http.h"

#include <string.h>

const char *
transport_kind(CURLcode code)
{
	switch (code) {
	case CURLE_OPERATION_TIMEDOUT:
		return "timeout";
	case CURLE_COULDNT_CONNECT:
		return "connect";
	case CURLE_COULDNT_RESOLVE_HOST:
	case CURLE_COULDNT_RESOLVE_PROXY:
		return "dns";
	case CURLE_SSL_CONNECT_ERROR:
	case CURLE_PEER_FAILED_VERIFICATION:
	case CURLE_SSL_CERTPROBLEM:
	case CURLE_SSL_CIPHER:
	case CURLE_SSL_CACERT_BADFILE:
	case CURLE_SSL_ISSUER_ERROR:
	case CURLE_SSL_PINNEDPUBKEYNOTMATCH:
	case CURLE_SSL_INVALIDCERTSTATUS:
		return "tls";
	case CURLE_RECV_ERROR:
	case CURLE_SEND_ERROR:
	case CURLE_GOT_NOTHING:
	case CURLE_PARTIAL_FILE:
	case CURLE_WEIRD_SERVER_REPLY:
		return "reset";
	default:
		return "other";
	}
}

const char *
transport_category(const char *kind)
{
	if (kind && strcmp(kind, "timeout") == 0)
		return "timeout";
	if (kind && strcmp(kind, "dns") == 0)
		return "dns";
	if (kind && strcmp(kind, "tls") == 0)
		return "tls";
	return "connection"; /* connect, reset, other, and any kind not known here */
}

const char *
http_batch_category(long status)
{
	if (status >= 200 && status < 300)
		return NULL;
	switch (status) {
	case 401:
		return "auth_expired";
	case 403:
		return "forbidden";
	case 404:
		return "not_found";
	case 408:
		return "timeout";
	case 429:
		return "rate_limited";
	default:
		break;
	}
	if (status >= 500 && status < 600)
		return "server_error";
	if (status >= 400 && status < 500)
		return NULL;
	return "unexpected_status";
}
