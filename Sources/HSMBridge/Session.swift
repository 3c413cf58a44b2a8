internal import CPKCS11
import Custody
import Synchronization

/// A PKCS #11 session on one slot.
///
/// A session runs one operation at a time: every call holds the session for the whole of its
/// operation (init, update, final), so concurrent tasks sharing a session take turns instead of
/// interleaving. Open one session per task for parallel work. The session closes itself when the
/// last reference goes away; after `close()` every call is refused.
public final class Session: @unchecked Sendable {
  /// The module the session belongs to (kept alive by the session).
  public let module: PKCS11Module
  /// The slot it was opened on.
  public let slot: SlotID
  /// Whether it may change token objects.
  public let readWrite: Bool

  // nil once closed. Held for the whole of each operation.
  private let handle: Mutex<CK_SESSION_HANDLE?>

  init(module: PKCS11Module, slot: SlotID, handle: CK_SESSION_HANDLE, readWrite: Bool) {
    self.module = module
    self.slot = slot
    self.readWrite = readWrite
    self.handle = Mutex(handle)
  }

  deinit {
    if let open = handle.withLock({ $0 }) {
      _ = module.functions.pointee.C_CloseSession(open)
    }
  }

  private var functions: CK_FUNCTION_LIST { module.functions.pointee }

  /// Runs one operation with exclusive use of the session.
  private func operation<R>(
    _ function: StaticString, _ body: (CK_SESSION_HANDLE, CK_FUNCTION_LIST) throws -> R
  ) throws -> R {
    try handle.withLock { handle in
      guard let open = handle else {
        throw HSMBridgeError(.sessionClosed, "\(function) on a closed session")
      }
      return try body(open, functions)
    }
  }

  /// Closes the session. Later calls are refused; closing twice is harmless.
  public func close() throws {
    let open: CK_SESSION_HANDLE? = handle.withLock { handle in
      defer { handle = nil }
      return handle
    }
    if let open { try check(functions.C_CloseSession(open), "C_CloseSession") }
  }

  /// Whether `close()` has been called.
  public var isClosed: Bool { handle.withLock { $0 == nil } }

  /// The session's state as the module reports it.
  public func info() throws -> SessionInfo {
    try operation("C_GetSessionInfo") { session, f in
      var raw = CK_SESSION_INFO()
      try check(f.C_GetSessionInfo(session, &raw), "C_GetSessionInfo")
      let state: SessionInfo.State =
        switch raw.state {
        case CK_STATE(CKS_RO_PUBLIC_SESSION): .readOnlyPublic
        case CK_STATE(CKS_RO_USER_FUNCTIONS): .readOnlyUser
        case CK_STATE(CKS_RW_PUBLIC_SESSION): .readWritePublic
        case CK_STATE(CKS_RW_USER_FUNCTIONS): .readWriteUser
        case CK_STATE(CKS_RW_SO_FUNCTIONS): .readWriteSecurityOfficer
        default: .other(UInt(raw.state))
        }
      return SessionInfo(
        slot: SlotID(rawValue: UInt(raw.slotID)), state: state,
        readWrite: raw.flags & CK_FLAGS(CKF_RW_SESSION) != 0)
    }
  }

  // MARK: Login and PINs

  /// Logs the token's `user` in (for every session of this module instance on the slot).
  public func login(_ user: UserType, pin: SecretBytes) throws {
    try operation("C_Login") { session, f in
      try pin.withUnsafeBytes { raw in
        try check(f.C_Login(session, user.raw, utf8Pointer(raw), CK_ULONG(raw.count)), "C_Login")
      }
    }
  }

  /// Logs out whoever is logged in.
  public func logout() throws {
    try operation("C_Logout") { session, f in try check(f.C_Logout(session), "C_Logout") }
  }

  /// Sets the normal user's PIN (Security Officer session).
  public func initPIN(_ pin: SecretBytes) throws {
    try operation("C_InitPIN") { session, f in
      try pin.withUnsafeBytes { raw in
        try check(f.C_InitPIN(session, utf8Pointer(raw), CK_ULONG(raw.count)), "C_InitPIN")
      }
    }
  }

  /// Changes the PIN of whoever is logged in.
  public func setPIN(old: SecretBytes, new: SecretBytes) throws {
    try operation("C_SetPIN") { session, f in
      try old.withUnsafeBytes { oldRaw in
        try new.withUnsafeBytes { newRaw in
          try check(
            f.C_SetPIN(
              session, utf8Pointer(oldRaw), CK_ULONG(oldRaw.count), utf8Pointer(newRaw),
              CK_ULONG(newRaw.count)), "C_SetPIN")
        }
      }
    }
  }

  // MARK: Objects

  /// The objects matching every attribute of `template` (all visible objects for an empty one).
  public func findObjects(_ template: [Attribute] = []) throws -> [ObjectHandle] {
    try operation("C_FindObjects") { session, f in
      try withCTemplate(template) { attributes, count in
        try check(f.C_FindObjectsInit(session, attributes, count), "C_FindObjectsInit")
      }
      var found = [ObjectHandle]()
      var failure: Error? = nil
      var batch = [CK_OBJECT_HANDLE](repeating: 0, count: 64)
      while true {
        var returned: CK_ULONG = 0
        let rv = f.C_FindObjects(session, &batch, CK_ULONG(batch.count), &returned)
        do { try check(rv, "C_FindObjects") } catch {
          failure = error
          break
        }
        if returned == 0 { break }
        found += batch.prefix(Int(returned)).map { ObjectHandle(rawValue: UInt($0)) }
      }
      let finalRV = f.C_FindObjectsFinal(session)
      if let failure { throw failure }
      try check(finalRV, "C_FindObjectsFinal")
      return found
    }
  }

  /// Reads `types` of `object`, one reading per type in the same order.
  ///
  /// Sizes are queried first; attributes the token will not reveal or the object does not have
  /// are reported as `.sensitive` or `.invalid` rather than failing the whole read.
  public func attributes(
    _ types: [AttributeType], of object: ObjectHandle
  ) throws
    -> [AttributeReading]
  {
    try operation("C_GetAttributeValue") { session, f in
      let handle = CK_OBJECT_HANDLE(object.rawValue)
      var query = types.map {
        CK_ATTRIBUTE(type: CK_ATTRIBUTE_TYPE($0.rawValue), pValue: nil, ulValueLen: 0)
      }
      let sizeRV = f.C_GetAttributeValue(session, handle, &query, CK_ULONG(query.count))
      if sizeRV != CKR_OK && sizeRV != CKR_ATTRIBUTE_SENSITIVE
        && sizeRV != CKR_ATTRIBUTE_TYPE_INVALID
      {
        try check(sizeRV, "C_GetAttributeValue")
      }
      var readings = [AttributeReading?](repeating: nil, count: types.count)
      var available = [Int]()
      for index in query.indices {
        if query[index].ulValueLen == CPKCS11_UNAVAILABLE_INFORMATION {
          // Ask alone to learn why this one is unavailable.
          var single = CK_ATTRIBUTE(type: query[index].type, pValue: nil, ulValueLen: 0)
          let rv = f.C_GetAttributeValue(session, handle, &single, 1)
          readings[index] = rv == CKR_ATTRIBUTE_SENSITIVE ? .sensitive : .invalid
        } else {
          available.append(index)
        }
      }
      var buffers = available.map { [UInt8](repeating: 0, count: Int(query[$0].ulValueLen)) }
      defer { for index in buffers.indices { SecretBytes.zero(&buffers[index]) } }
      if !available.isEmpty {
        let total = buffers.reduce(0) { $0 + $1.count }
        var storage = [UInt8](repeating: 0, count: max(total, 1))
        defer { SecretBytes.zero(&storage) }
        try storage.withUnsafeMutableBytes { raw in
          var request = [CK_ATTRIBUTE]()
          var offset = 0
          for (position, index) in available.enumerated() {
            let size = buffers[position].count
            request.append(
              CK_ATTRIBUTE(
                type: query[index].type, pValue: size == 0 ? nil : raw.baseAddress! + offset,
                ulValueLen: CK_ULONG(size)))
            offset += size
          }
          try check(
            f.C_GetAttributeValue(session, handle, &request, CK_ULONG(request.count)),
            "C_GetAttributeValue")
          offset = 0
          for (position, index) in available.enumerated() {
            let size = Int(request[position].ulValueLen)
            let bytes = Array(raw[offset..<offset + size])
            offset += buffers[position].count
            readings[index] = .value(Attribute(type: types[index], bytes: bytes))
          }
        }
      }
      return readings.map { $0! }
    }
  }

  /// One attribute of `object`, nil when it is sensitive or absent.
  public func attribute(_ type: AttributeType, of object: ObjectHandle) throws -> Attribute? {
    try attributes([type], of: object)[0].attribute
  }

  /// A boolean attribute of `object`, nil when it is absent.
  public func bool(_ type: AttributeType, of object: ObjectHandle) throws -> Bool? {
    try attribute(type, of: object)?.boolValue
  }

  /// Changes attributes of `object`.
  public func setAttributes(_ template: [Attribute], of object: ObjectHandle) throws {
    try operation("C_SetAttributeValue") { session, f in
      try withCTemplate(template) { attributes, count in
        try check(
          f.C_SetAttributeValue(session, CK_OBJECT_HANDLE(object.rawValue), attributes, count),
          "C_SetAttributeValue")
      }
    }
  }

  /// Creates an object from `template`.
  public func createObject(_ template: [Attribute]) throws -> ObjectHandle {
    try operation("C_CreateObject") { session, f in
      var handle: CK_OBJECT_HANDLE = 0
      try withCTemplate(template) { attributes, count in
        try check(f.C_CreateObject(session, attributes, count, &handle), "C_CreateObject")
      }
      return ObjectHandle(rawValue: UInt(handle))
    }
  }

  /// Copies `object`, changing the attributes of `template` in the copy.
  public func copyObject(
    _ object: ObjectHandle, changing template: [Attribute] = []
  ) throws
    -> ObjectHandle
  {
    try operation("C_CopyObject") { session, f in
      var handle: CK_OBJECT_HANDLE = 0
      try withCTemplate(template) { attributes, count in
        try check(
          f.C_CopyObject(session, CK_OBJECT_HANDLE(object.rawValue), attributes, count, &handle),
          "C_CopyObject")
      }
      return ObjectHandle(rawValue: UInt(handle))
    }
  }

  /// Destroys `object`.
  public func destroyObject(_ object: ObjectHandle) throws {
    try operation("C_DestroyObject") { session, f in
      try check(f.C_DestroyObject(session, CK_OBJECT_HANDLE(object.rawValue)), "C_DestroyObject")
    }
  }

  // MARK: Keys

  /// Generates a secret key.
  public func generateKey(_ mechanism: Mechanism, _ template: [Attribute]) throws -> ObjectHandle {
    try operation("C_GenerateKey") { session, f in
      var handle: CK_OBJECT_HANDLE = 0
      try mechanism.withCMechanism { cMechanism in
        try withCTemplate(template) { attributes, count in
          try check(f.C_GenerateKey(session, cMechanism, attributes, count, &handle), "C_GenerateKey")
        }
      }
      return ObjectHandle(rawValue: UInt(handle))
    }
  }

  /// Generates a key pair; returns the public and the private key.
  public func generateKeyPair(
    _ mechanism: Mechanism, publicKey publicTemplate: [Attribute],
    privateKey privateTemplate: [Attribute]
  ) throws -> (publicKey: ObjectHandle, privateKey: ObjectHandle) {
    try operation("C_GenerateKeyPair") { session, f in
      var publicHandle: CK_OBJECT_HANDLE = 0
      var privateHandle: CK_OBJECT_HANDLE = 0
      try mechanism.withCMechanism { cMechanism in
        try withCTemplate(publicTemplate) { publicAttributes, publicCount in
          try withCTemplate(privateTemplate) { privateAttributes, privateCount in
            try check(
              f.C_GenerateKeyPair(
                session, cMechanism, publicAttributes, publicCount, privateAttributes,
                privateCount, &publicHandle, &privateHandle), "C_GenerateKeyPair")
          }
        }
      }
      return (ObjectHandle(rawValue: UInt(publicHandle)), ObjectHandle(rawValue: UInt(privateHandle)))
    }
  }

  /// Derives a new key from `baseKey`.
  public func deriveKey(
    _ mechanism: Mechanism, baseKey: ObjectHandle, _ template: [Attribute]
  )
    throws -> ObjectHandle
  {
    try operation("C_DeriveKey") { session, f in
      var handle: CK_OBJECT_HANDLE = 0
      try mechanism.withCMechanism { cMechanism in
        try withCTemplate(template) { attributes, count in
          try check(
            f.C_DeriveKey(
              session, cMechanism, CK_OBJECT_HANDLE(baseKey.rawValue), attributes, count, &handle),
            "C_DeriveKey")
        }
      }
      return ObjectHandle(rawValue: UInt(handle))
    }
  }

  /// Wraps (exports, encrypted) `key` under `wrappingKey`.
  public func wrapKey(
    _ mechanism: Mechanism, wrappingKey: ObjectHandle, key: ObjectHandle
  ) throws
    -> [UInt8]
  {
    try operation("C_WrapKey") { session, f in
      try mechanism.withCMechanism { cMechanism in
        try twoCall("C_WrapKey") { output, length in
          f.C_WrapKey(
            session, cMechanism, CK_OBJECT_HANDLE(wrappingKey.rawValue),
            CK_OBJECT_HANDLE(key.rawValue), output, length)
        }
      }
    }
  }

  /// Unwraps (imports) `wrapped` under `unwrappingKey` as a new key with `template`.
  public func unwrapKey(
    _ mechanism: Mechanism, unwrappingKey: ObjectHandle, wrapped: [UInt8], _ template: [Attribute]
  ) throws -> ObjectHandle {
    try operation("C_UnwrapKey") { session, f in
      var handle: CK_OBJECT_HANDLE = 0
      var input = wrapped
      try mechanism.withCMechanism { cMechanism in
        try withCTemplate(template) { attributes, count in
          try check(
            f.C_UnwrapKey(
              session, cMechanism, CK_OBJECT_HANDLE(unwrappingKey.rawValue), &input,
              CK_ULONG(input.count), attributes, count, &handle), "C_UnwrapKey")
        }
      }
      return ObjectHandle(rawValue: UInt(handle))
    }
  }

  // MARK: Cryptographic operations

  /// Encrypts `data` in one part.
  public func encrypt(_ mechanism: Mechanism, key: ObjectHandle, _ data: [UInt8]) throws -> [UInt8] {
    try operation("C_Encrypt") { session, f in
      try mechanism.withCMechanism { cMechanism in
        try check(f.C_EncryptInit(session, cMechanism, CK_OBJECT_HANDLE(key.rawValue)), "C_EncryptInit")
      }
      var input = data
      defer { SecretBytes.zero(&input) }
      return try twoCall("C_Encrypt") { output, length in
        f.C_Encrypt(session, &input, CK_ULONG(input.count), output, length)
      }
    }
  }

  /// Encrypts secret plaintext in one part.
  public func encrypt(
    _ mechanism: Mechanism, key: ObjectHandle, secret: SecretBytes
  ) throws
    -> [UInt8]
  {
    try operation("C_Encrypt") { session, f in
      try mechanism.withCMechanism { cMechanism in
        try check(f.C_EncryptInit(session, cMechanism, CK_OBJECT_HANDLE(key.rawValue)), "C_EncryptInit")
      }
      return try secret.withUnsafeBytes { raw in
        let input = UnsafeMutablePointer(mutating: raw.baseAddress?.assumingMemoryBound(to: UInt8.self))
        return try twoCall("C_Encrypt") { output, length in
          f.C_Encrypt(session, input, CK_ULONG(raw.count), output, length)
        }
      }
    }
  }

  /// Decrypts `data` in one part. For AES-GCM a wrong tag is `CKR_ENCRYPTED_DATA_INVALID`.
  public func decrypt(_ mechanism: Mechanism, key: ObjectHandle, _ data: [UInt8]) throws -> [UInt8] {
    try decryptSecret(mechanism, key: key, data).withUnsafeBytes { Array($0) }
  }

  /// Decrypts into a zeroing buffer, for plaintext that is secret.
  public func decryptSecret(
    _ mechanism: Mechanism, key: ObjectHandle, _ data: [UInt8]
  ) throws
    -> SecretBytes
  {
    try operation("C_Decrypt") { session, f in
      try mechanism.withCMechanism { cMechanism in
        try check(f.C_DecryptInit(session, cMechanism, CK_OBJECT_HANDLE(key.rawValue)), "C_DecryptInit")
      }
      var input = data
      var length: CK_ULONG = 0
      let sizeRV = f.C_Decrypt(session, &input, CK_ULONG(input.count), nil, &length)
      try check(sizeRV, "C_Decrypt")
      let capacity = Int(length)
      var produced = 0
      let plaintext = try SecretBytes(count: capacity) { buffer in
        var actual = CK_ULONG(capacity)
        try check(
          f.C_Decrypt(
            session, &input, CK_ULONG(input.count),
            buffer.baseAddress?.assumingMemoryBound(to: UInt8.self), &actual), "C_Decrypt")
        produced = Int(actual)
      }
      if produced == capacity { return plaintext }
      return plaintext.withUnsafeBytes { SecretBytes($0.prefix(produced)) }
    }
  }

  /// Signs (or MACs) `data` in one part.
  public func sign(_ mechanism: Mechanism, key: ObjectHandle, _ data: [UInt8]) throws -> [UInt8] {
    try operation("C_Sign") { session, f in
      try mechanism.withCMechanism { cMechanism in
        try check(f.C_SignInit(session, cMechanism, CK_OBJECT_HANDLE(key.rawValue)), "C_SignInit")
      }
      var input = data
      return try twoCall("C_Sign") { output, length in
        f.C_Sign(session, &input, CK_ULONG(input.count), output, length)
      }
    }
  }

  /// Verifies `signature` over `data`: true when valid, false for `CKR_SIGNATURE_INVALID` or
  /// `CKR_SIGNATURE_LEN_RANGE`; any other failure throws.
  public func verify(
    _ mechanism: Mechanism, key: ObjectHandle, _ data: [UInt8], signature: [UInt8]
  )
    throws -> Bool
  {
    try operation("C_Verify") { session, f in
      try mechanism.withCMechanism { cMechanism in
        try check(f.C_VerifyInit(session, cMechanism, CK_OBJECT_HANDLE(key.rawValue)), "C_VerifyInit")
      }
      var input = data
      var sig = signature
      let rv = f.C_Verify(session, &input, CK_ULONG(input.count), &sig, CK_ULONG(sig.count))
      if rv == CKR_SIGNATURE_INVALID || rv == CKR_SIGNATURE_LEN_RANGE { return false }
      try check(rv, "C_Verify")
      return true
    }
  }

  /// Hashes `data` in one part.
  public func digest(_ mechanism: Mechanism, _ data: [UInt8]) throws -> [UInt8] {
    try operation("C_Digest") { session, f in
      try mechanism.withCMechanism { cMechanism in
        try check(f.C_DigestInit(session, cMechanism), "C_DigestInit")
      }
      var input = data
      return try twoCall("C_Digest") { output, length in
        f.C_Digest(session, &input, CK_ULONG(input.count), output, length)
      }
    }
  }

  /// `count` bytes from the token's random number generator.
  public func generateRandom(_ count: Int) throws -> [UInt8] {
    var bytes = [UInt8](repeating: 0, count: count)
    try bytes.withUnsafeMutableBytes { try generateRandom(into: $0) }
    return bytes
  }

  /// Fills `buffer` from the token's random number generator (for secrets: pass a
  /// `SecretBytes` initialiser's buffer).
  public func generateRandom(into buffer: UnsafeMutableRawBufferPointer) throws {
    guard let base = buffer.baseAddress, buffer.count > 0 else { return }
    try operation("C_GenerateRandom") { session, f in
      try check(
        f.C_GenerateRandom(
          session, base.assumingMemoryBound(to: UInt8.self), CK_ULONG(buffer.count)),
        "C_GenerateRandom")
    }
  }
}

/// The size query and the call of PKCS #11's output convention: a first call with no buffer
/// learns the length, a second fills it.
private func twoCall(
  _ function: StaticString, _ call: (UnsafeMutablePointer<UInt8>?, UnsafeMutablePointer<CK_ULONG>) -> CK_RV
) throws -> [UInt8] {
  var length: CK_ULONG = 0
  try check(call(nil, &length), function)
  var output = [UInt8](repeating: 0, count: Int(length))
  try output.withUnsafeMutableBufferPointer { buffer in
    try check(call(buffer.baseAddress, &length), function)
  }
  output.removeLast(output.count - Int(length))
  return output
}

private func utf8Pointer(_ raw: UnsafeRawBufferPointer) -> UnsafeMutablePointer<CK_UTF8CHAR>? {
  UnsafeMutablePointer(mutating: raw.baseAddress?.assumingMemoryBound(to: CK_UTF8CHAR.self))
}
