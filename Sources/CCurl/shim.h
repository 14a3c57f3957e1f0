// libcurl for the Buildkite REST API, loaded on first use with dlopen: a run that never
// calls the API (a plan that stops at the probe, `check`, `render`) does not map libcurl
// and its TLS, Kerberos and LDAP libraries, about 4 MB of resident memory. curl_easy_setopt
// is variadic, which Swift cannot call, so each option type gets a typed wrapper here.
// It does not fall back to another HTTP library: without libcurl.so.4 the API is unusable.
// Only HTTPClient.swift calls these (the state below is per file that inlines them).
#include <curl/curl.h>
#include <dlfcn.h>
#include <pthread.h>
#include <stddef.h>
#include <stdio.h>

struct ccurl_api {
    void *library;
    const char *error;
    char reason[256];
    CURLcode (*global_init)(long);
    CURL *(*easy_init)(void);
    CURLcode (*easy_setopt)(CURL *, CURLoption, ...);
    CURLcode (*easy_getinfo)(CURL *, CURLINFO, ...);
    CURLcode (*easy_perform)(CURL *);
    void (*easy_cleanup)(CURL *);
    const char *(*easy_strerror)(CURLcode);
    struct curl_slist *(*slist_append)(struct curl_slist *, const char *);
    void (*slist_free_all)(struct curl_slist *);
};

static inline struct ccurl_api *ccurl_api_state(void) {
    static struct ccurl_api api;
    return &api;
}

static inline void ccurl_load_once(void) {
    struct ccurl_api *api = ccurl_api_state();
    api->library = dlopen("libcurl.so.4", RTLD_NOW | RTLD_LOCAL);
    if (!api->library) {
        // dlerror's text lives in a per-thread buffer: keep a copy for other threads.
        const char *why = dlerror();
        snprintf(api->reason, sizeof api->reason, "%s", why ? why : "dlopen failed");
        api->error = api->reason;
        return;
    }
    void *lib = api->library;
    *(void **)&api->global_init = dlsym(lib, "curl_global_init");
    *(void **)&api->easy_init = dlsym(lib, "curl_easy_init");
    *(void **)&api->easy_setopt = dlsym(lib, "curl_easy_setopt");
    *(void **)&api->easy_getinfo = dlsym(lib, "curl_easy_getinfo");
    *(void **)&api->easy_perform = dlsym(lib, "curl_easy_perform");
    *(void **)&api->easy_cleanup = dlsym(lib, "curl_easy_cleanup");
    *(void **)&api->easy_strerror = dlsym(lib, "curl_easy_strerror");
    *(void **)&api->slist_append = dlsym(lib, "curl_slist_append");
    *(void **)&api->slist_free_all = dlsym(lib, "curl_slist_free_all");
    if (!api->global_init || !api->easy_init || !api->easy_setopt || !api->easy_getinfo
        || !api->easy_perform || !api->easy_cleanup || !api->easy_strerror
        || !api->slist_append || !api->slist_free_all) {
        api->error = "libcurl.so.4 lacks a function bkfleet needs";
        api->library = NULL;
        return;
    }
    // curl_global_init is not thread-safe; pthread_once runs this exactly once.
    if (api->global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
        api->error = "curl_global_init failed";
        api->library = NULL;
    }
}

/// Loads libcurl once per process; NULL when it is usable, else why not.
static inline const char *ccurl_load(void) {
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    pthread_once(&once, ccurl_load_once);
    return ccurl_api_state()->library ? NULL : ccurl_api_state()->error;
}

// The wrappers below may only be called after ccurl_load() returned NULL.
static inline CURL *ccurl_easy_init(void) { return ccurl_api_state()->easy_init(); }
static inline CURLcode ccurl_easy_perform(CURL *h) {
    return ccurl_api_state()->easy_perform(h);
}
static inline void ccurl_easy_cleanup(CURL *h) { ccurl_api_state()->easy_cleanup(h); }
static inline const char *ccurl_easy_strerror(CURLcode c) {
    return ccurl_api_state()->easy_strerror(c);
}
static inline struct curl_slist *ccurl_slist_append(struct curl_slist *l, const char *s) {
    return ccurl_api_state()->slist_append(l, s);
}
static inline void ccurl_slist_free_all(struct curl_slist *l) {
    ccurl_api_state()->slist_free_all(l);
}
static inline CURLcode ccurl_setopt_long(CURL *h, CURLoption o, long v) {
    return ccurl_api_state()->easy_setopt(h, o, v);
}
static inline CURLcode ccurl_setopt_string(CURL *h, CURLoption o, const char *v) {
    return ccurl_api_state()->easy_setopt(h, o, v);
}
static inline CURLcode ccurl_setopt_pointer(CURL *h, CURLoption o, void *v) {
    return ccurl_api_state()->easy_setopt(h, o, v);
}
typedef size_t (*ccurl_write_fn)(char *, size_t, size_t, void *);
static inline CURLcode ccurl_setopt_write(CURL *h, CURLoption o, ccurl_write_fn f) {
    return ccurl_api_state()->easy_setopt(h, o, f);
}
static inline CURLcode ccurl_getinfo_long(CURL *h, CURLINFO i, long *v) {
    return ccurl_api_state()->easy_getinfo(h, i, v);
}
