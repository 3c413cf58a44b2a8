internal import CPKCS11
import Custody
import Logging
import Synchronization

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A PKCS #11 module loaded at run time, initialised with OS locking, finalised and unloaded
/// when the last reference goes away.
///
/// One process may hold several instances of the same module (several SoftHSM devices): the
/// first is loaded from its path, every further one from a private copy of the library, so each
/// has its own global state and reads its own configuration at `C_Initialize`.
public final class PKCS11Module: @unchecked Sendable {
  /// The path the module was asked for (the private copy, if any, is already deleted).
  public let path: String
  /// What the module says of itself.
  public let info: ModuleInfo
  /// Whether this instance runs from a private copy of the library.
  public let isPrivateCopy: Bool
  /// How the function list was obtained: PKCS #11 3.0's `C_GetInterface` (preferred when the
  /// module exports it) or 2.x's `C_GetFunctionList`.
  public let entryPoint: EntryPoint
  /// The version the function list declares (3.x through `C_GetInterface` on a 3.0 module).
  public let functionListVersion: Version

  /// The entry point a function list came from.
  public enum EntryPoint: String, Sendable {
    case getInterface = "C_GetInterface"
    case getFunctionList = "C_GetFunctionList"
  }

  // Immutable after init; PKCS #11 with CKF_OS_LOCKING_OK is safe to call from any thread.
  let functions: UnsafeMutablePointer<CK_FUNCTION_LIST>
  private let library: UnsafeMutableRawPointer
  private let registryKey: String
  private let logger: Logger

  /// The module path from configuration: `CUSTOS_PKCS11_MODULE`, else Debian's SoftHSM.
  public static var configuredPath: String {
    if let value = getenv("CUSTOS_PKCS11_MODULE"), let path = String(validatingCString: value),
      !path.isEmpty
    {
      return path
    }
    return softHSMDefaultPath
  }

  /// Where Debian's softhsm2 package installs the module.
  public static let softHSMDefaultPath = "/usr/lib/softhsm/libsofthsm2.so"

  /// Loads and initialises the module at `path`.
  ///
  /// - Parameter softHSMConfiguration: for SoftHSM, the `softhsm2.conf` this instance reads at
  ///   `C_Initialize`. HSMBridge is the only code that sets `SOFTHSM2_CONF`, and only for the
  ///   duration of that call.
  public init(
    path: String = PKCS11Module.configuredPath, softHSMConfiguration: String? = nil,
    logger: Logger
  ) throws {
    self.path = path
    self.logger = logger
    let loaded = try ModuleLoader.shared.load(path: path, logger: logger)
    self.library = loaded.library
    self.registryKey = loaded.key
    self.isPrivateCopy = loaded.privateCopy
    do {
      (self.functions, self.entryPoint) = try Self.functionList(library: loaded.library, path: path)
      self.functionListVersion = Version(functions.pointee.version)
      try Self.initialize(functions, softHSMConfiguration: softHSMConfiguration)
      var raw = CK_INFO()
      try check(functions.pointee.C_GetInfo(&raw), "C_GetInfo")
      self.info = ModuleInfo(
        cryptokiVersion: Version(raw.cryptokiVersion),
        manufacturer: paddedString(raw.manufacturerID),
        libraryDescription: paddedString(raw.libraryDescription),
        libraryVersion: Version(raw.libraryVersion))
    } catch {
      ModuleLoader.shared.release(key: loaded.key, library: loaded.library)
      throw error
    }
    logger.debug(
      "PKCS #11 module loaded",
      metadata: [
        "pkcs11.module": "\(path)", "pkcs11.private_copy": "\(loaded.privateCopy)",
        "pkcs11.library": "\(info.libraryDescription) \(info.libraryVersion)",
      ])
  }

  deinit {
    _ = functions.pointee.C_Finalize(nil)
    ModuleLoader.shared.release(key: registryKey, library: library)
  }

  private static func functionList(
    library: UnsafeMutableRawPointer, path: String
  ) throws -> (UnsafeMutablePointer<CK_FUNCTION_LIST>, EntryPoint) {
    var list: UnsafeMutablePointer<CK_FUNCTION_LIST>? = nil
    var entryPoint = EntryPoint.getInterface
    if let symbol = dlsym(library, "C_GetInterface") {
      // PKCS #11 3.0: ask for the default "PKCS 11" interface. Its function list begins with
      // the 2.40 layout, which is all HSMBridge calls.
      let getInterface = unsafeBitCast(symbol, to: CPKCS11_C_GetInterface.self)
      var interface: UnsafeMutablePointer<CPKCS11_INTERFACE>? = nil
      var name = Array("PKCS 11".utf8) + [0]
      let rv = name.withUnsafeMutableBufferPointer {
        getInterface($0.baseAddress, nil, &interface, 0)
      }
      if rv == CKR_OK, let pointer = interface?.pointee.pFunctionList {
        list = pointer.assumingMemoryBound(to: CK_FUNCTION_LIST.self)
      }
    }
    if list == nil {
      entryPoint = .getFunctionList
      guard let symbol = dlsym(library, "C_GetFunctionList") else {
        throw HSMBridgeError(
          .missingFunction, "\(path) exports neither C_GetInterface nor C_GetFunctionList")
      }
      let getFunctionList = unsafeBitCast(symbol, to: CPKCS11_C_GetFunctionList.self)
      try check(getFunctionList(&list), "C_GetFunctionList")
    }
    guard let list else {
      throw HSMBridgeError(.missingFunction, "\(path) returned no function list")
    }
    try requireFunctions(list.pointee, path: path)
    return (list, entryPoint)
  }

  /// Refuses a module whose function list has a null entry for a call HSMBridge makes.
  private static func requireFunctions(_ list: CK_FUNCTION_LIST, path: String) throws {
    let entries: [(String, Bool)] = [
      ("C_Initialize", list.C_Initialize != nil), ("C_Finalize", list.C_Finalize != nil),
      ("C_GetInfo", list.C_GetInfo != nil), ("C_GetSlotList", list.C_GetSlotList != nil),
      ("C_GetSlotInfo", list.C_GetSlotInfo != nil), ("C_GetTokenInfo", list.C_GetTokenInfo != nil),
      ("C_GetMechanismList", list.C_GetMechanismList != nil),
      ("C_GetMechanismInfo", list.C_GetMechanismInfo != nil),
      ("C_InitToken", list.C_InitToken != nil), ("C_InitPIN", list.C_InitPIN != nil),
      ("C_SetPIN", list.C_SetPIN != nil), ("C_OpenSession", list.C_OpenSession != nil),
      ("C_CloseSession", list.C_CloseSession != nil),
      ("C_GetSessionInfo", list.C_GetSessionInfo != nil), ("C_Login", list.C_Login != nil),
      ("C_Logout", list.C_Logout != nil), ("C_CreateObject", list.C_CreateObject != nil),
      ("C_CopyObject", list.C_CopyObject != nil), ("C_DestroyObject", list.C_DestroyObject != nil),
      ("C_GetAttributeValue", list.C_GetAttributeValue != nil),
      ("C_SetAttributeValue", list.C_SetAttributeValue != nil),
      ("C_FindObjectsInit", list.C_FindObjectsInit != nil),
      ("C_FindObjects", list.C_FindObjects != nil),
      ("C_FindObjectsFinal", list.C_FindObjectsFinal != nil),
      ("C_EncryptInit", list.C_EncryptInit != nil), ("C_Encrypt", list.C_Encrypt != nil),
      ("C_DecryptInit", list.C_DecryptInit != nil), ("C_Decrypt", list.C_Decrypt != nil),
      ("C_DigestInit", list.C_DigestInit != nil), ("C_Digest", list.C_Digest != nil),
      ("C_SignInit", list.C_SignInit != nil), ("C_Sign", list.C_Sign != nil),
      ("C_VerifyInit", list.C_VerifyInit != nil), ("C_Verify", list.C_Verify != nil),
      ("C_GenerateKey", list.C_GenerateKey != nil),
      ("C_GenerateKeyPair", list.C_GenerateKeyPair != nil), ("C_WrapKey", list.C_WrapKey != nil),
      ("C_UnwrapKey", list.C_UnwrapKey != nil), ("C_DeriveKey", list.C_DeriveKey != nil),
      ("C_GenerateRandom", list.C_GenerateRandom != nil),
    ]
    let missing = entries.filter { !$0.1 }.map(\.0)
    guard missing.isEmpty else {
      throw HSMBridgeError(
        .missingFunction,
        "\(path) has null function pointers for \(missing.joined(separator: ", "))")
    }
  }

  private static func initialize(
    _ functions: UnsafeMutablePointer<CK_FUNCTION_LIST>, softHSMConfiguration: String?
  ) throws {
    var arguments = CK_C_INITIALIZE_ARGS()
    arguments.flags = CK_FLAGS(CKF_OS_LOCKING_OK)
    let initialize = {
      try withUnsafeMutablePointer(to: &arguments) {
        try check(functions.pointee.C_Initialize($0), "C_Initialize")
      }
    }
    guard let softHSMConfiguration else { return try initialize() }
    try ModuleLoader.shared.withEnvironment("SOFTHSM2_CONF", softHSMConfiguration, initialize)
  }

  // MARK: Slots and tokens

  /// The module's slots; with `tokenPresent`, only those holding a token.
  public func slots(tokenPresent: Bool = true) throws -> [SlotID] {
    var count: CK_ULONG = 0
    let present = CK_BBOOL(tokenPresent ? CK_TRUE : CK_FALSE)
    try check(functions.pointee.C_GetSlotList(present, nil, &count), "C_GetSlotList")
    var slots = [CK_SLOT_ID](repeating: 0, count: Int(count))
    try check(functions.pointee.C_GetSlotList(present, &slots, &count), "C_GetSlotList")
    return slots.prefix(Int(count)).map { SlotID(rawValue: UInt($0)) }
  }

  /// What the module says of `slot`.
  public func slotInfo(_ slot: SlotID) throws -> SlotInfo {
    var raw = CK_SLOT_INFO()
    try check(functions.pointee.C_GetSlotInfo(CK_SLOT_ID(slot.rawValue), &raw), "C_GetSlotInfo")
    return SlotInfo(
      description: paddedString(raw.slotDescription),
      manufacturer: paddedString(raw.manufacturerID),
      tokenPresent: raw.flags & CK_FLAGS(CKF_TOKEN_PRESENT) != 0,
      removableDevice: raw.flags & CK_FLAGS(CKF_REMOVABLE_DEVICE) != 0,
      hardwareSlot: raw.flags & CK_FLAGS(CKF_HW_SLOT) != 0)
  }

  /// What the module says of the token in `slot`.
  public func tokenInfo(_ slot: SlotID) throws -> TokenInfo {
    var raw = CK_TOKEN_INFO()
    try check(functions.pointee.C_GetTokenInfo(CK_SLOT_ID(slot.rawValue), &raw), "C_GetTokenInfo")
    return TokenInfo(
      label: paddedString(raw.label), manufacturer: paddedString(raw.manufacturerID),
      model: paddedString(raw.model), serialNumber: paddedString(raw.serialNumber),
      flags: UInt(raw.flags),
      maxSessionCount: availableCount(raw.ulMaxSessionCount),
      sessionCount: availableCount(raw.ulSessionCount),
      maxRWSessionCount: availableCount(raw.ulMaxRwSessionCount),
      rwSessionCount: availableCount(raw.ulRwSessionCount),
      minPINLength: UInt(raw.ulMinPinLen), maxPINLength: UInt(raw.ulMaxPinLen),
      hardwareVersion: Version(raw.hardwareVersion), firmwareVersion: Version(raw.firmwareVersion))
  }

  /// The first slot whose token carries `label`.
  public func slot(withTokenLabel label: String) throws -> SlotID {
    for slot in try slots(tokenPresent: true) where try tokenInfo(slot).label == label {
      return slot
    }
    throw HSMBridgeError(.tokenNotFound, "no token labelled '\(label)' in \(path)")
  }

  /// The mechanisms the token in `slot` offers.
  public func mechanisms(_ slot: SlotID) throws -> [MechanismType] {
    var count: CK_ULONG = 0
    let id = CK_SLOT_ID(slot.rawValue)
    try check(functions.pointee.C_GetMechanismList(id, nil, &count), "C_GetMechanismList")
    var types = [CK_MECHANISM_TYPE](repeating: 0, count: Int(count))
    try check(functions.pointee.C_GetMechanismList(id, &types, &count), "C_GetMechanismList")
    return types.prefix(Int(count)).map { MechanismType(rawValue: UInt($0)) }
  }

  /// Key sizes and usages of `mechanism` on `slot`.
  public func mechanismInfo(_ mechanism: MechanismType, slot: SlotID) throws -> MechanismInfo {
    var raw = CK_MECHANISM_INFO()
    try check(
      functions.pointee.C_GetMechanismInfo(
        CK_SLOT_ID(slot.rawValue), CK_MECHANISM_TYPE(mechanism.rawValue), &raw),
      "C_GetMechanismInfo")
    return MechanismInfo(
      minKeySize: UInt(raw.ulMinKeySize), maxKeySize: UInt(raw.ulMaxKeySize), flags: UInt(raw.flags))
  }

  /// Initialises (or re-initialises, destroying every object) the token in `slot`.
  ///
  /// SoftHSM renumbers a slot when it initialises its token: find the token again by label.
  public func initToken(_ slot: SlotID, soPIN: SecretBytes, label: String) throws {
    var labelBytes = try padded(label, width: 32)
    try soPIN.withUnsafeBytes { pin in
      let pinPointer = UnsafeMutablePointer(
        mutating: pin.baseAddress?.assumingMemoryBound(to: CK_UTF8CHAR.self))
      try check(
        functions.pointee.C_InitToken(
          CK_SLOT_ID(slot.rawValue), pinPointer, CK_ULONG(pin.count), &labelBytes),
        "C_InitToken")
    }
  }

  /// Opens a session on `slot`. Read-write sessions may create and change token objects.
  public func openSession(_ slot: SlotID, readWrite: Bool = true) throws -> Session {
    var flags = CK_FLAGS(CKF_SERIAL_SESSION)
    if readWrite { flags |= CK_FLAGS(CKF_RW_SESSION) }
    var handle: CK_SESSION_HANDLE = 0
    try check(
      functions.pointee.C_OpenSession(CK_SLOT_ID(slot.rawValue), flags, nil, nil, &handle),
      "C_OpenSession")
    return Session(module: self, slot: slot, handle: handle, readWrite: readWrite)
  }
}

/// Process-wide bookkeeping of loaded libraries: which paths are in use (so a further instance
/// gets a private copy) and the one lock under which `SOFTHSM2_CONF` is ever changed.
final class ModuleLoader: Sendable {
  static let shared = ModuleLoader()

  private struct State {
    var instancesByPath: [String: Int] = [:]
    var copies = 0
  }
  private let state = Mutex(State())
  private let environmentLock = Mutex(())

  struct Loaded {
    var library: UnsafeMutableRawPointer
    var key: String
    var privateCopy: Bool
  }

  func load(path: String, logger: Logger) throws -> Loaded {
    guard let resolved = realpath(path, nil) else {
      throw HSMBridgeError(.moduleNotFound, "PKCS #11 module \(path) not found")
    }
    let key = String(cString: resolved)
    free(resolved)
    let needsCopy: Bool = state.withLock { state in
      let inUse = state.instancesByPath[key, default: 0] > 0
      state.instancesByPath[key, default: 0] += 1
      return inUse
    }
    do {
      if !needsCopy {
        return Loaded(library: try open(key), key: key, privateCopy: false)
      }
      return Loaded(library: try openPrivateCopy(of: key), key: key, privateCopy: true)
    } catch {
      state.withLock { $0.instancesByPath[key, default: 1] -= 1 }
      throw error
    }
  }

  func release(key: String, library: UnsafeMutableRawPointer) {
    dlclose(library)
    state.withLock { $0.instancesByPath[key, default: 1] -= 1 }
  }

  /// Runs `body` with `name` set to `value`, restoring the previous value afterwards.
  func withEnvironment<R>(_ name: String, _ value: String, _ body: () throws -> R) throws -> R {
    try environmentLock.withLock { _ in
      let previous = getenv(name).map { String(cString: $0) }
      setenv(name, value, 1)
      defer {
        if let previous { setenv(name, previous, 1) } else { unsetenv(name) }
      }
      return try body()
    }
  }

  private func open(_ path: String) throws -> UnsafeMutableRawPointer {
    guard let library = dlopen(path, RTLD_NOW | RTLD_LOCAL) else {
      let reason = dlerror().map { String(cString: $0) } ?? "unknown error"
      throw HSMBridgeError(.moduleLoadFailed, "dlopen(\(path)) failed: \(reason)")
    }
    return library
  }

  /// Copies the library into a fresh private directory, loads the copy, and deletes the file
  /// (the mapping stays). The copy has its own globals, so its instance is independent.
  private func openPrivateCopy(of path: String) throws -> UnsafeMutableRawPointer {
    let base = getenv("TMPDIR").map { String(cString: $0) } ?? "/tmp"
    var template = Array("\(base)/custos-pkcs11-XXXXXX".utf8CString)
    guard let directory = template.withUnsafeMutableBufferPointer({ mkdtemp($0.baseAddress!) })
    else {
      throw HSMBridgeError(.fileSystem, "cannot create a private directory under \(base)")
    }
    let directoryPath = String(cString: directory)
    let number = state.withLock { state in
      state.copies += 1
      return state.copies
    }
    let copyPath = "\(directoryPath)/module-\(number).so"
    defer {
      unlink(copyPath)
      rmdir(directoryPath)
    }
    try copyFile(from: path, to: copyPath)
    return try open(copyPath)
  }

  private func copyFile(from source: String, to destination: String) throws {
    let input = Glibc.open(source, O_RDONLY | O_CLOEXEC)
    guard input >= 0 else {
      throw HSMBridgeError(.fileSystem, "cannot read \(source): \(String(cString: strerror(errno)))")
    }
    defer { close(input) }
    let output = Glibc.open(destination, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o700)
    guard output >= 0 else {
      throw HSMBridgeError(
        .fileSystem, "cannot write \(destination): \(String(cString: strerror(errno)))")
    }
    defer { close(output) }
    var buffer = [UInt8](repeating: 0, count: 1 << 16)
    while true {
      let count = read(input, &buffer, buffer.count)
      if count == 0 { break }
      guard count > 0, write(output, buffer, count) == count else {
        throw HSMBridgeError(
          .fileSystem, "copying \(source) failed: \(String(cString: strerror(errno)))")
      }
    }
  }
}
