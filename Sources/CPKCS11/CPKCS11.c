// The CPKCS11 target is header-only; SwiftPM needs one source file to build it.
#include "CPKCS11.h"
