// Debian's libssl-dev (OpenSSL 3): only the EVP digest interface, for RIPEMD-160.
#include <openssl/evp.h>
