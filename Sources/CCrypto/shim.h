// OpenSSL's digest functions, used for secret and file fingerprints.
#include <openssl/evp.h>
#include <openssl/sha.h>
#include <openssl/rand.h>
