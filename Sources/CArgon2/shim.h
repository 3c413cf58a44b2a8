// Debian's libargon2 (libargon2-dev): the reference implementation of Argon2 (RFC 9106).
#include <argon2.h>


