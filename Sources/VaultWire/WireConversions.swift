import Custody
import Foundation

// One place that turns the Swift values of the wire into vault.proto's messages and back: the
// device encodes with these, the client decodes with them.

extension DeviceState {
  /// The state as the wire carries it.
  public var message: Custos_Vault_V1_DeviceState {
    switch self {
    case .sealed: .sealed
    case .ready: .ready
    case .stopping: .stopping
    }
  }

  /// The state a message carries; nil for one the contract does not define.
  public init?(_ message: Custos_Vault_V1_DeviceState) {
    switch message {
    case .sealed: self = .sealed
    case .ready: self = .ready
    case .stopping: self = .stopping
    case .unspecified, .UNRECOGNIZED: return nil
    }
  }
}

extension Lockout {
  public var message: Custos_Vault_V1_Lockout {
    var message = Custos_Vault_V1_Lockout()
    message.failures = UInt32(clamping: failures)
    message.attemptsBeforeLockout = UInt32(clamping: attemptsBeforeLockout)
    message.lockedUntilUnixMs = lockedUntil.map { Int64(($0.timeIntervalSince1970 * 1000).rounded(.up)) } ?? 0
    return message
  }

  public init(_ message: Custos_Vault_V1_Lockout) {
    self.init(
      failures: Int(message.failures), attemptsBeforeLockout: Int(message.attemptsBeforeLockout),
      lockedUntil: message.lockedUntilUnixMs == 0
        ? nil : Date(timeIntervalSince1970: Double(message.lockedUntilUnixMs) / 1000))
  }
}

extension UnsealStatus {
  public var message: Custos_Vault_V1_UnsealProgress {
    var message = Custos_Vault_V1_UnsealProgress()
    message.threshold = UInt32(clamping: threshold)
    message.shares = UInt32(clamping: shares)
    message.progress = UInt32(clamping: progress)
    message.holders = holders
    message.lockout = lockout.message
    return message
  }

  public init(_ message: Custos_Vault_V1_UnsealProgress) {
    self.init(
      threshold: Int(message.threshold), shares: Int(message.shares), progress: Int(message.progress),
      holders: message.holders, lockout: Lockout(message.lockout))
  }
}

extension RootState {
  /// The root state as the wire carries it.
  public var message: Custos_Vault_V1_RootState {
    var message = Custos_Vault_V1_RootState()
    message.epoch = epoch
    message.leafCount = leafCount
    message.root = root.withUnsafeBytes { Data($0) }
    return message
  }

  /// The root state of a message; `invalidArgument` when the root is not 32 bytes.
  public init(wire message: Custos_Vault_V1_RootState) throws(VaultWireError) {
    guard let root = Hash256(message.root), message.leafCount >= 1 else {
      throw VaultWireError(
        .invalidArgument,
        "a root state needs a 32-byte root and at least one leaf (got \(message.root.count) bytes, \(message.leafCount) leaves)"
      )
    }
    self.init(epoch: message.epoch, leafCount: message.leafCount, root: root)
  }
}

extension DeviceStatus {
  public var message: Custos_Vault_V1_StatusResponse {
    var message = Custos_Vault_V1_StatusResponse()
    message.state = state.message
    message.deviceName = name
    message.deviceSerial = serial
    message.vaultMeasurement = Data(measurement)
    message.unseal = unseal.message
    if let root { message.root = root.message }
    message.loginLockout = loginLockout.message
    return message
  }

  public init(_ message: Custos_Vault_V1_StatusResponse) throws(VaultWireError) {
    guard let state = DeviceState(message.state) else {
      throw VaultWireError(
        .unexpected, "the device reported state \(message.state.rawValue), which this client does not know")
    }
    self.init(
      state: state, name: message.deviceName, serial: message.deviceSerial,
      measurement: Array(message.vaultMeasurement),
      unseal: UnsealStatus(message.unseal), root: message.hasRoot ? try RootState(wire: message.root) : nil,
      loginLockout: Lockout(message.loginLockout))
  }
}

extension ChangeProof {
  public var message: Custos_Vault_V1_MerkleProof {
    var message = Custos_Vault_V1_MerkleProof()
    message.leaf = proof.leaf.withUnsafeBytes { Data($0) }
    message.siblings = proof.siblings.map { $0.withUnsafeBytes { Data($0) } }
    message.leafCount = leafCount
    message.root = root.withUnsafeBytes { Data($0) }
    return message
  }

  /// The proof of a message; `invalidArgument` naming the field that is not 32 bytes.
  public init(_ message: Custos_Vault_V1_MerkleProof) throws(VaultWireError) {
    guard let leaf = Hash256(message.leaf) else {
      throw VaultWireError(.invalidArgument, "the proof's leaf is \(message.leaf.count) bytes, not 32")
    }
    guard let root = Hash256(message.root) else {
      throw VaultWireError(.invalidArgument, "the proof's root is \(message.root.count) bytes, not 32")
    }
    var siblings = [Hash256]()
    siblings.reserveCapacity(message.siblings.count)
    for (index, sibling) in message.siblings.enumerated() {
      guard let hash = Hash256(sibling) else {
        throw VaultWireError(.invalidArgument, "sibling \(index) of the proof is \(sibling.count) bytes, not 32")
      }
      siblings.append(hash)
    }
    self.init(proof: MerkleProof(leaf: leaf, siblings: siblings), leafCount: message.leafCount, root: root)
  }
}

extension AppliedWalletChange {
  /// The change as the wire carries it.
  public var message: Custos_Vault_V1_AppliedChange {
    var message = Custos_Vault_V1_AppliedChange()
    message.kind = kind.rawValue
    message.walletID = walletID
    message.node = node
    message.leaf = leaf.withUnsafeBytes { Data($0) }
    message.state = root.message
    message.sequence = sequence
    return message
  }

  /// The change of a message.
  public init(wire message: Custos_Vault_V1_AppliedChange) throws(VaultWireError) {
    guard let leaf = Hash256(message.leaf) else {
      throw VaultWireError(.unexpected, "the device reported a change with a \(message.leaf.count)-byte leaf")
    }
    guard let kind = Kind(rawValue: message.kind) else {
      throw VaultWireError(.unexpected, "the device reported a change of kind '\(message.kind)'")
    }
    self.init(
      sequence: message.sequence, kind: kind, walletID: message.walletID, node: message.node, leaf: leaf,
      root: try RootState(wire: message.state))
  }
}

extension VaultCall {
  /// A create request's fields.
  public var createMessage: Custos_Vault_V1_CreateWalletRequest {
    var message = Custos_Vault_V1_CreateWalletRequest()
    message.envelope = Data(envelope)
    message.approvals = approvals.map { Data($0) }
    if let proof { message.proof = proof.message }
    if let newWalletID { message.walletID = newWalletID }
    return message
  }

  public init(_ message: Custos_Vault_V1_CreateWalletRequest) throws(VaultWireError) {
    self.init(
      envelope: Array(message.envelope), approvals: message.approvals.map { Array($0) },
      proof: message.hasProof ? try ChangeProof(message.proof) : nil,
      newWalletID: message.walletID == 0 ? nil : message.walletID)
  }

  public var updateMessage: Custos_Vault_V1_UpdateWalletRequest { walletMessage() }
  public var removeMessage: Custos_Vault_V1_RemoveWalletRequest { walletMessage() }
  public var signMessage: Custos_Vault_V1_SignRequest { walletMessage() }

  /// The fields of an update, remove or sign request (they are the same).
  public init(_ message: some WalletCallMessage) throws(VaultWireError) {
    self.init(
      envelope: Array(message.envelope), approvals: message.approvals.map { Array($0) },
      walletData: Array(message.walletData), sealedSeed: Array(message.sealedSeed),
      proof: message.hasProof ? try ChangeProof(message.proof) : nil)
  }

  private func walletMessage<Message: WalletCallMessage>() -> Message {
    var message = Message()
    message.envelope = Data(envelope)
    message.approvals = approvals.map { Data($0) }
    message.walletData = Data(walletData)
    message.sealedSeed = Data(sealedSeed)
    if let proof { message.proof = proof.message }
    return message
  }
}

/// The requests that act on an existing wallet: update, remove and sign carry the same fields.
public protocol WalletCallMessage {
  init()
  var envelope: Data { get set }
  var approvals: [Data] { get set }
  var walletData: Data { get set }
  var sealedSeed: Data { get set }
  var proof: Custos_Vault_V1_MerkleProof { get set }
  var hasProof: Bool { get }
}

extension Custos_Vault_V1_UpdateWalletRequest: WalletCallMessage {}
extension Custos_Vault_V1_RemoveWalletRequest: WalletCallMessage {}
extension Custos_Vault_V1_SignRequest: WalletCallMessage {}

extension VaultOutcome {
  public var message: Custos_Vault_V1_VaultResult {
    var message = Custos_Vault_V1_VaultResult()
    message.walletData = Data(walletData)
    message.sealedSeed = Data(sealedSeed)
    message.result = Data(result)
    if let change { message.change = change.message }
    return message
  }

  public init(_ message: Custos_Vault_V1_VaultResult) throws(VaultWireError) {
    self.init(
      walletData: Array(message.walletData), sealedSeed: Array(message.sealedSeed), result: Array(message.result),
      change: message.hasChange ? try AppliedWalletChange(wire: message.change) : nil)
  }
}

extension WalletAddressKind {
  public var message: Custos_Vault_V1_AddressKind {
    switch self {
    case .ethereum: .ethereum
    case .bitcoinP2WPKHMainnet: .bitcoinP2WpkhMainnet
    case .bitcoinP2WPKHTestnet: .bitcoinP2WpkhTestnet
    case .bitcoinP2WPKHRegtest: .bitcoinP2WpkhRegtest
    case .bitcoinP2TRMainnet: .bitcoinP2TrMainnet
    case .bitcoinP2TRTestnet: .bitcoinP2TrTestnet
    case .bitcoinP2TRRegtest: .bitcoinP2TrRegtest
    case .solana: .solana
    }
  }

  /// The kind a message asks for: nil for none, `invalidArgument` for one the contract lacks.
  public static func from(_ message: Custos_Vault_V1_AddressKind) throws(VaultWireError) -> WalletAddressKind? {
    switch message {
    case .none: return nil
    case .UNRECOGNIZED(let value):
      throw VaultWireError(.invalidArgument, "address kind \(value) is not one this device knows")
    default: return allCases.first { $0.message == message }
    }
  }
}

extension PublicKeyQuery {
  public var message: Custos_Vault_V1_GetPublicKeyRequest {
    var message = Custos_Vault_V1_GetPublicKeyRequest()
    message.walletData = Data(walletData)
    message.sealedSeed = Data(sealedSeed)
    message.path = path
    message.addressKind = address?.message ?? .none
    return message
  }

  public init(_ message: Custos_Vault_V1_GetPublicKeyRequest) throws(VaultWireError) {
    self.init(
      walletData: Array(message.walletData), sealedSeed: Array(message.sealedSeed), path: message.path,
      address: try WalletAddressKind.from(message.addressKind))
  }
}

extension PublicKeyInfo {
  public var message: Custos_Vault_V1_GetPublicKeyResponse {
    var message = Custos_Vault_V1_GetPublicKeyResponse()
    message.scheme = scheme
    message.path = path
    message.publicKey = Data(publicKey)
    message.chainCode = Data(chainCode)
    message.fingerprint = Data(fingerprint)
    message.extendedPublicKey = extendedPublicKey ?? ""
    message.address = address ?? ""
    return message
  }

  public init(_ message: Custos_Vault_V1_GetPublicKeyResponse) {
    self.init(
      scheme: message.scheme, path: message.path, publicKey: Array(message.publicKey),
      chainCode: Array(message.chainCode), fingerprint: Array(message.fingerprint),
      extendedPublicKey: message.extendedPublicKey.isEmpty ? nil : message.extendedPublicKey,
      address: message.address.isEmpty ? nil : message.address)
  }
}
