// Header shim over p11-kit's PKCS #11 header.
//
// p11-kit ships a self-contained cryptoki 2.40 header that already defines the
// platform macros (CK_PTR, CK_DEFINE_FUNCTION, ...); it is found in the default
// include path under p11-kit-1/. This shim adds what Swift cannot import from
// function-like or cast macros, and the PKCS #11 3.0 interface discovery entry
// point (C_GetInterface) that the 2.40 header lacks. Nothing here is linked:
// modules are loaded at run time with dlopen.
#ifndef CUSTOS_CPKCS11_H
#define CUSTOS_CPKCS11_H

#include <p11-kit-1/p11-kit/pkcs11.h>

/// CK_UNAVAILABLE_INFORMATION as a typed constant (the header spells it as a cast).
static const CK_ULONG CPKCS11_UNAVAILABLE_INFORMATION = CK_UNAVAILABLE_INFORMATION;
static const CK_ULONG CPKCS11_VENDOR_DEFINED = CKA_VENDOR_DEFINED;

/// PKCS #11 3.0 interface descriptor (section 5.1.7 of the 3.0 base specification).
typedef struct CPKCS11_INTERFACE {
  CK_UTF8CHAR *pInterfaceName;
  void *pFunctionList;
  CK_FLAGS flags;
} CPKCS11_INTERFACE;

/// PKCS #11 3.0 C_GetInterface, looked up with dlsym when the module exports it.
typedef CK_RV (*CPKCS11_C_GetInterface)(CK_UTF8CHAR *pInterfaceName, CK_VERSION *pVersion,
                                        CPKCS11_INTERFACE **ppInterface, CK_FLAGS flags);

/// PKCS #11 2.x C_GetFunctionList, looked up with dlsym.
typedef CK_RV (*CPKCS11_C_GetFunctionList)(CK_FUNCTION_LIST **ppFunctionList);

#endif
