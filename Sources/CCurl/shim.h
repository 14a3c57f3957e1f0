// libcurl for the Buildkite REST API. curl_easy_setopt is variadic, which Swift
// cannot call, so each option type gets a typed wrapper here.
#include <curl/curl.h>

static inline CURLcode ccurl_setopt_long(CURL *h, CURLoption o, long v) {
    return curl_easy_setopt(h, o, v);
}
static inline CURLcode ccurl_setopt_string(CURL *h, CURLoption o, const char *v) {
    return curl_easy_setopt(h, o, v);
}
static inline CURLcode ccurl_setopt_pointer(CURL *h, CURLoption o, void *v) {
    return curl_easy_setopt(h, o, v);
}
typedef size_t (*ccurl_write_fn)(char *, size_t, size_t, void *);
static inline CURLcode ccurl_setopt_write(CURL *h, CURLoption o, ccurl_write_fn f) {
    return curl_easy_setopt(h, o, f);
}
static inline CURLcode ccurl_getinfo_long(CURL *h, CURLINFO i, long *v) {
    return curl_easy_getinfo(h, i, v);
}
