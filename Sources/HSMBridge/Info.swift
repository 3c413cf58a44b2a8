internal import CPKCS11

/// A cryptoki or firmware version, `major.minor`.
public struct Version: Hashable, Sendable, CustomStringConvertible, Codable {
  public var major: UInt8
  public var minor: UInt8
  public init(major: UInt8, minor: UInt8) {
    self.major = major
    self.minor = minor
  }
  init(_ version: CK_VERSION) { self.init(major: version.major, minor: version.minor) }
  public var description: String { "\(major).\(minor)" }
}

/// A slot of a module, as the module numbers it.
public struct SlotID: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
  public let rawValue: UInt
  public init(rawValue: UInt) { self.rawValue = rawValue }
  public var description: String { "slot \(rawValue)" }
}

/// What a module says of itself (`C_GetInfo`).
public struct ModuleInfo: Hashable, Sendable {
  public var cryptokiVersion: Version
  public var manufacturer: String
  public var libraryDescription: String
  public var libraryVersion: Version
}

/// What a module says of a slot (`C_GetSlotInfo`).
public struct SlotInfo: Hashable, Sendable {
  public var description: String
  public var manufacturer: String
  public var tokenPresent: Bool
  public var removableDevice: Bool
  public var hardwareSlot: Bool
}

/// What a module says of the token in a slot (`C_GetTokenInfo`).
public struct TokenInfo: Hashable, Sendable {
  public var label: String
  public var manufacturer: String
  public var model: String
  public var serialNumber: String
  /// The raw `CKF_` flags; the common ones are also given as properties.
  public var flags: UInt
  public var maxSessionCount: UInt?
  public var sessionCount: UInt?
  public var maxRWSessionCount: UInt?
  public var rwSessionCount: UInt?
  public var minPINLength: UInt
  public var maxPINLength: UInt
  public var hardwareVersion: Version
  public var firmwareVersion: Version

  public var initialized: Bool { flags & UInt(CKF_TOKEN_INITIALIZED) != 0 }
  public var userPINInitialized: Bool { flags & UInt(CKF_USER_PIN_INITIALIZED) != 0 }
  public var loginRequired: Bool { flags & UInt(CKF_LOGIN_REQUIRED) != 0 }
  public var writeProtected: Bool { flags & UInt(CKF_WRITE_PROTECTED) != 0 }
  public var hasRandomNumberGenerator: Bool { flags & UInt(CKF_RNG) != 0 }
  public var userPINLocked: Bool { flags & UInt(CKF_USER_PIN_LOCKED) != 0 }
  public var soPINLocked: Bool { flags & UInt(CKF_SO_PIN_LOCKED) != 0 }
}

/// What a module says of one mechanism on a slot (`C_GetMechanismInfo`).
public struct MechanismInfo: Hashable, Sendable {
  public var minKeySize: UInt
  public var maxKeySize: UInt
  /// The raw `CKF_` flags; the usage ones are also given by `usages`.
  public var flags: UInt

  /// The operations the mechanism serves, by their PKCS #11 names (`encrypt`, `sign`, ...).
  public var usages: [String] {
    let table: [(CK_FLAGS, String)] = [
      (CK_FLAGS(CKF_HW), "hw"), (CK_FLAGS(CKF_ENCRYPT), "encrypt"),
      (CK_FLAGS(CKF_DECRYPT), "decrypt"), (CK_FLAGS(CKF_DIGEST), "digest"),
      (CK_FLAGS(CKF_SIGN), "sign"), (CK_FLAGS(CKF_SIGN_RECOVER), "sign_recover"),
      (CK_FLAGS(CKF_VERIFY), "verify"), (CK_FLAGS(CKF_VERIFY_RECOVER), "verify_recover"),
      (CK_FLAGS(CKF_GENERATE), "generate"), (CK_FLAGS(CKF_GENERATE_KEY_PAIR), "generate_key_pair"),
      (CK_FLAGS(CKF_WRAP), "wrap"), (CK_FLAGS(CKF_UNWRAP), "unwrap"),
      (CK_FLAGS(CKF_DERIVE), "derive"),
    ]
    return table.filter { flags & UInt($0.0) != 0 }.map(\.1)
  }
}

/// The state of a session (`C_GetSessionInfo`).
public struct SessionInfo: Hashable, Sendable {
  public enum State: Hashable, Sendable {
    case readOnlyPublic, readOnlyUser, readWritePublic, readWriteUser, readWriteSecurityOfficer
    case other(UInt)
  }
  public var slot: SlotID
  public var state: State
  public var readWrite: Bool
}

/// Who logs in to a session.
public enum UserType: Sendable, Hashable {
  /// The token's Security Officer.
  case securityOfficer
  /// The token's normal user.
  case user
  /// Re-authentication for one operation on a key with `CKA_ALWAYS_AUTHENTICATE`.
  case contextSpecific

  var raw: CK_USER_TYPE {
    switch self {
    case .securityOfficer: CK_USER_TYPE(CKU_SO)
    case .user: CK_USER_TYPE(CKU_USER)
    case .contextSpecific: CK_USER_TYPE(CKU_CONTEXT_SPECIFIC)
    }
  }
}

/// A fixed-width, blank-padded PKCS #11 text field as a trimmed Swift string.
func paddedString<T>(_ field: T) -> String {
  withUnsafeBytes(of: field) { raw in
    String(decoding: raw, as: UTF8.self).trimmingTrailing(" \0")
  }
}

/// `value` blank-padded to `width` bytes, for labels passed to `C_InitToken`.
func padded(_ value: String, width: Int) throws -> [UInt8] {
  let bytes = Array(value.utf8)
  guard bytes.count <= width else {
    throw HSMBridgeError(
      .invalidArgument, "label '\(value)' is \(bytes.count) bytes; PKCS #11 allows at most \(width)")
  }
  return bytes + [UInt8](repeating: 0x20, count: width - bytes.count)
}

extension String {
  func trimmingTrailing(_ characters: String) -> String {
    var scalars = Substring(self).unicodeScalars[...]
    let set = Set(characters.unicodeScalars)
    while let last = scalars.last, set.contains(last) { scalars = scalars.dropLast() }
    return String(scalars)
  }
}

/// PKCS #11's `CK_UNAVAILABLE_INFORMATION` and `CK_EFFECTIVELY_INFINITE` as nil.
func availableCount(_ value: CK_ULONG) -> UInt? {
  value == CPKCS11_UNAVAILABLE_INFORMATION ? nil : UInt(value)
}
