internal import CPKCS11

/// A PKCS #11 return value (`CK_RV`), named by its `CKR_` constant.
public struct ReturnValue: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
  public let rawValue: UInt

  public init(rawValue: UInt) { self.rawValue = rawValue }

  /// The `CKR_` name from the specification's table; vendor-defined and unknown codes in hex.
  public var name: String {
    if let name = returnValueNames[rawValue] { return name }
    if rawValue & UInt(CPKCS11_VENDOR_DEFINED) != 0 {
      return "CKR_VENDOR_DEFINED+" + hex(rawValue & ~UInt(CPKCS11_VENDOR_DEFINED))
    }
    return "CKR_UNKNOWN(\(hex(rawValue)))"
  }

  public var description: String { name }

  /// The value named `name` (`CKR_KEY_UNEXTRACTABLE`), if the specification's table knows it.
  public init?(name: String) {
    guard let entry = returnValueNames.first(where: { $0.value == name }) else { return nil }
    self.rawValue = entry.key
  }

  public static let ok = ReturnValue(rawValue: UInt(CKR_OK))
  public static let argumentsBad = ReturnValue(rawValue: UInt(CKR_ARGUMENTS_BAD))
  public static let attributeReadOnly = ReturnValue(rawValue: UInt(CKR_ATTRIBUTE_READ_ONLY))
  public static let attributeSensitive = ReturnValue(rawValue: UInt(CKR_ATTRIBUTE_SENSITIVE))
  public static let attributeTypeInvalid = ReturnValue(rawValue: UInt(CKR_ATTRIBUTE_TYPE_INVALID))
  public static let attributeValueInvalid = ReturnValue(rawValue: UInt(CKR_ATTRIBUTE_VALUE_INVALID))
  public static let actionProhibited = ReturnValue(rawValue: UInt(CKR_ACTION_PROHIBITED))
  public static let bufferTooSmall = ReturnValue(rawValue: UInt(CKR_BUFFER_TOO_SMALL))
  public static let cryptokiAlreadyInitialized = ReturnValue(
    rawValue: UInt(CKR_CRYPTOKI_ALREADY_INITIALIZED))
  public static let encryptedDataInvalid = ReturnValue(rawValue: UInt(CKR_ENCRYPTED_DATA_INVALID))
  public static let functionNotSupported = ReturnValue(rawValue: UInt(CKR_FUNCTION_NOT_SUPPORTED))
  public static let generalError = ReturnValue(rawValue: UInt(CKR_GENERAL_ERROR))
  public static let keyFunctionNotPermitted = ReturnValue(
    rawValue: UInt(CKR_KEY_FUNCTION_NOT_PERMITTED))
  public static let keyTypeInconsistent = ReturnValue(rawValue: UInt(CKR_KEY_TYPE_INCONSISTENT))
  public static let keyNotWrappable = ReturnValue(rawValue: UInt(CKR_KEY_NOT_WRAPPABLE))
  public static let keyUnextractable = ReturnValue(rawValue: UInt(CKR_KEY_UNEXTRACTABLE))
  public static let mechanismInvalid = ReturnValue(rawValue: UInt(CKR_MECHANISM_INVALID))
  public static let mechanismParamInvalid = ReturnValue(rawValue: UInt(CKR_MECHANISM_PARAM_INVALID))
  public static let objectHandleInvalid = ReturnValue(rawValue: UInt(CKR_OBJECT_HANDLE_INVALID))
  public static let operationActive = ReturnValue(rawValue: UInt(CKR_OPERATION_ACTIVE))
  public static let pinIncorrect = ReturnValue(rawValue: UInt(CKR_PIN_INCORRECT))
  public static let pinLenRange = ReturnValue(rawValue: UInt(CKR_PIN_LEN_RANGE))
  public static let sessionClosed = ReturnValue(rawValue: UInt(CKR_SESSION_CLOSED))
  public static let sessionHandleInvalid = ReturnValue(rawValue: UInt(CKR_SESSION_HANDLE_INVALID))
  public static let sessionReadOnly = ReturnValue(rawValue: UInt(CKR_SESSION_READ_ONLY))
  public static let signatureInvalid = ReturnValue(rawValue: UInt(CKR_SIGNATURE_INVALID))
  public static let templateInconsistent = ReturnValue(rawValue: UInt(CKR_TEMPLATE_INCONSISTENT))
  public static let templateIncomplete = ReturnValue(rawValue: UInt(CKR_TEMPLATE_INCOMPLETE))
  public static let tokenWriteProtected = ReturnValue(rawValue: UInt(CKR_TOKEN_WRITE_PROTECTED))
  public static let userAlreadyLoggedIn = ReturnValue(rawValue: UInt(CKR_USER_ALREADY_LOGGED_IN))
  public static let userNotLoggedIn = ReturnValue(rawValue: UInt(CKR_USER_NOT_LOGGED_IN))
  public static let userTypeInvalid = ReturnValue(rawValue: UInt(CKR_USER_TYPE_INVALID))
  public static let wrappingKeyHandleInvalid = ReturnValue(
    rawValue: UInt(CKR_WRAPPING_KEY_HANDLE_INVALID))
}

/// A PKCS #11 call that returned anything but `CKR_OK`: which call, and which code.
public struct PKCS11Error: Error, Hashable, Sendable, CustomStringConvertible {
  /// The return value, with its `CKR_` name.
  public let code: ReturnValue
  /// The PKCS #11 function that returned it, e.g. `C_Login`.
  public let function: String

  public init(code: ReturnValue, function: String) {
    self.code = code
    self.function = function
  }

  public var description: String { "\(function) returned \(code.name) (\(hex(code.rawValue)))" }
}

/// The one place every `CK_RV` is checked.
@inline(__always)
func check(_ rv: CK_RV, _ function: StaticString) throws(PKCS11Error) {
  if rv != CKR_OK {
    throw PKCS11Error(code: ReturnValue(rawValue: UInt(rv)), function: "\(function)")
  }
}

/// A failure of HSMBridge itself (loading a module, a device directory, a refused argument),
/// not of a PKCS #11 call.
public struct HSMBridgeError: Error, Hashable, Sendable, CustomStringConvertible {
  /// What kind of failure this is. Extensible: new codes are added as static members.
  public struct Code: Hashable, Sendable, CustomStringConvertible {
    public let name: String
    public init(_ name: String) { self.name = name }
    public var description: String { name }

    public static let moduleNotFound = Code("moduleNotFound")
    public static let moduleLoadFailed = Code("moduleLoadFailed")
    public static let missingFunction = Code("missingFunction")
    public static let tokenNotFound = Code("tokenNotFound")
    public static let invalidArgument = Code("invalidArgument")
    public static let deviceExists = Code("deviceExists")
    public static let deviceNotFound = Code("deviceNotFound")
    public static let deviceLocked = Code("deviceLocked")
    public static let deviceInvalid = Code("deviceInvalid")
    public static let fileSystem = Code("fileSystem")
    public static let sessionClosed = Code("sessionClosed")
    public static let unexpectedAttribute = Code("unexpectedAttribute")
    /// libargon2 refused its parameters or failed.
    public static let argon2Failed = Code("argon2Failed")
    /// Fewer unseal shares than the threshold, or the same share twice.
    public static let notEnoughShares = Code("notEnoughShares")
    /// A share file that does not open with its holder's password (wrong password or damaged).
    public static let wrongPassword = Code("wrongPassword")
    /// A share file that is not a Custos share, or belongs to another device.
    public static let shareInvalid = Code("shareInvalid")
    /// The shares combined into a secret the device does not recognise.
    public static let activationFailed = Code("activationFailed")
    /// The device's enrolment file is missing or not valid.
    public static let enrolmentInvalid = Code("enrolmentInvalid")
    /// An officer token or its PIN, or a signature made by one, was refused.
    public static let officerRefused = Code("officerRefused")
    /// A lockdown attacks file that is not valid (names the attack and the field).
    public static let attacksInvalid = Code("attacksInvalid")
    /// A tester's tool could not be started.
    public static let toolFailed = Code("toolFailed")
  }

  public let code: Code
  /// A sentence naming what was wrong. Never contains secret material.
  public let reason: String

  public init(_ code: Code, _ reason: String) {
    self.code = code
    self.reason = reason
  }

  public var description: String { "\(code): \(reason)" }
}

func hex(_ value: UInt) -> String {
  let digits = String(value, radix: 16, uppercase: true)
  return "0x" + String(repeating: "0", count: max(0, 8 - digits.count)) + digits
}
