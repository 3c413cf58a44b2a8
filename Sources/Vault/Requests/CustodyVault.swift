import Custody
import Foundation
import HSMBridge
import Logging

/// The vault's request API (DESIGN.md section 8), the one type the device process serves:
/// create a wallet, change its configuration, remove it, sign with it (each with its
/// approvers' approvals), read public keys and addresses (public information, no approvals),
/// and read the root state.
///
/// Inputs and outputs are canonical bytes (request envelope, approvals, wallet data, sealed
/// seed) and small value types (proofs, results), so the wire layer only moves them. A
/// compromised server can relay, queue and drop requests, never originate or alter one: every
/// request is checked in this order before anything is unsealed:
///
/// 1. the encodings: the envelope, each approval and the wallet data decode (canonical only),
///    and the wallet data is the leaf the proof shows in a recent root;
/// 2. approvals: each valid, from a distinct approver the wallet enrols (for a creation: every
///    proposed approver, each proving possession of its key), at least the threshold;
/// 3. the envelope against the wallet: same wallet, made against this wallet data (its hash),
///    nonce greater than the wallet's last one, not expired;
/// 4. the policy (signing requests): time of day, per-transaction limit, rolling window,
///    destination allowlist, judged on the transaction the vault marshals itself;
/// 5. only then: unseal, derive, sign, check the signature, re-seal under the new wallet data.
///
/// The new nonce, signature counters and policy state go into the wallet data, so each request
/// is one Merkle update of its wallet's leaf, applied to the running root and committed with
/// others in one token write (`GroupCommit`); its result is returned only once that write is
/// done. A refused request changes nothing: not the root, not the nonce, not the sealed seed.
///
/// Requests run in parallel; their token calls (unseal, re-seal) go through a small pool of
/// PKCS #11 sessions, held for those calls only. Callers may supply proofs against any recent
/// root, which the vault rebases (`RunningRoot`).
public final class CustodyVault: Sendable {
  let pool: SessionPool
  let commits: GroupCommit
  let clock: any VaultClock
  let logger: Logger

  /// How long a token write waits, at most, for requests still under way (never when none is,
  /// and it stops waiting when the last of them is applied). Measured with `custos bench
  /// approve --linger-us`: at 32 concurrent requests, 5 ms made batches of 13 (1 ms: 3) and gave
  /// 2,600 signatures/s at 12 ms p50 against 1,850/s at 16 ms: fewer token writes leave the
  /// cores to the requests, so the wait costs no latency under load.
  public static let defaultLinger: Duration = .milliseconds(5)

  /// A vault over the custody partition `session` is logged into (as the user): it opens the
  /// root state there (committing with `session`, flushing `syncDirectory`, the partition's
  /// token directory, after each write) and `sessions` more sessions beside it for requests.
  /// Proofs may be made against any of the last `window` roots. A token write waits at most
  /// `linger` for requests still under way to join it (not at all when none is); a creation
  /// prepared for a later wallet id waits at most `addWait` for the ids before it. With
  /// `recycling`, the request sessions move to a fresh PKCS #11 instance every so many token
  /// operations (SoftHSM keeps every destroyed sealing key until `C_Finalize`).
  public init(
    session: Session, syncDirectory: String?, sessions: Int = ProcessInfo.processInfo.activeProcessorCount,
    window: Int = 4096, linger: Duration = CustodyVault.defaultLinger, addWait: Duration = .seconds(2),
    clock: any VaultClock = SystemVaultClock(), recycling: SessionRecycling? = nil, logger: Logger
  ) throws {
    let store = try RootStateStore.open(session: session, syncDirectory: syncDirectory, logger: logger)
    pool = try SessionPool(beside: session, count: sessions, recycling: recycling, logger: logger)
    commits = GroupCommit(store: store, window: window, linger: linger, addWait: addWait, logger: logger)
    self.clock = clock
    self.logger = logger
  }

  /// The durable and the running root.
  public var rootState: VaultRootState { commits.state }

  /// Batch sizes and commit times since the last reset.
  public var commitStatistics: CommitStatistics { commits.commitStatistics }

  /// Starts counting batch sizes and commit times afresh.
  public func resetCommitStatistics() { commits.resetStatistics() }

  /// How many sessions serve requests in parallel.
  public var sessionCount: Int { pool.count }

  /// How many times the request sessions moved to a fresh PKCS #11 instance.
  public var sessionRenewals: Int { pool.renewalCount }

  // MARK: Requests

  /// Creates the wallet a `create-wallet` envelope proposes, approved by every proposed
  /// approver. Its id is the leaf `proof.node` (by default the anchor's leaf count), applied
  /// when the running tree has that many leaves: after the creations of the ids before it,
  /// which it may wait for (see `CurrentLeafProof`); its seed is drawn from the token and
  /// sealed under the new wallet data.
  public func createWallet(
    envelope envelopeBytes: [UInt8], approvals approvalBytes: [[UInt8]], proof: CurrentLeafProof
  ) async throws -> RequestResult {
    let ticket = commits.begin()
    defer { ticket.close() }
    let envelope = try CustodyVault.decodeEnvelope(envelopeBytes)
    guard case .createWallet(let configuration) = envelope.operation else {
      throw RequestError(.wrongOperation, "a \(envelope.operation.name) request was sent to create a wallet")
    }
    let approvals = try CustodyVault.decodeApprovals(approvalBytes)
    try commits.verifyAdd(proof)
    let now = clock.now()
    let approvers = try ApprovalCheck.verify(
      envelope: envelopeBytes, approvals: approvals, approvers: configuration.approvers,
      required: configuration.approvers.count)
    guard now < envelope.expiry else { throw CustodyVault.expired(envelope, now: now) }
    guard configuration.custodial else {
      throw RequestError(.unsupported, "this version creates custodial wallets only (the 2-party scheme is not built)")
    }
    var wallet = configuration.wallet(id: proof.node, requestNonce: envelope.nonce)
    wallet.approvers = approvers
    let encoding = try CustodyVault.encode(wallet)
    let walletHash = Hash256.sha256(encoding)
    let sealed = try await pool.withVault { vault in try vault.createWallet(walletHash: walletHash.bytes) }
    let change = try await commits.add(walletID: wallet.id, newLeaf: walletHash, proof: proof, ticket: ticket)
    logger.info(
      "wallet created", metadata: ["wallet.id": "\(wallet.id)", "vault.sequence": "\(change.sequence)"])
    return RequestResult(output: [], walletData: encoding, sealedSeed: sealed.bytes, change: change)
  }

  /// Replaces a wallet's threshold, approvers and policy as an `update-wallet` envelope says,
  /// approved by the current approvers' quorum, and re-seals its seed for the new data.
  /// Approvers kept across the change keep their signature counters (the higher of the
  /// wallet's and the proposal's).
  public func updateWallet(
    envelope envelopeBytes: [UInt8], approvals approvalBytes: [[UInt8]], walletData: [UInt8], sealedSeed: [UInt8],
    proof: WalletProof
  ) async throws -> RequestResult {
    let ticket = commits.begin()
    defer { ticket.close() }
    let request = try check(envelopeBytes, approvalBytes, walletData, proof)
    guard case .updateWallet(let change) = request.envelope.operation else {
      throw RequestError(.wrongOperation, "a \(request.envelope.operation.name) request was sent to update a wallet")
    }
    var updated = change.applied(to: request.wallet)
    updated.requestNonce = request.envelope.nonce
    for index in updated.approvers.indices {
      guard case .passkey(var proposed) = updated.approvers[index].credential else { continue }
      for current in request.approvers {
        if case .passkey(let enrolled) = current.credential, enrolled.credentialID == proposed.credentialID {
          proposed.signCount = max(proposed.signCount, enrolled.signCount)
        }
      }
      updated.approvers[index].credential = .passkey(proposed)
    }
    let encoding = try CustodyVault.encode(updated)
    let newHash = Hash256.sha256(encoding)
    let sealed = try CustodyVault.sealedSeed(sealedSeed)
    let resealed = try await pool.withVault { vault in
      try CustodyVault.mapSealing { try vault.reseal(sealed, from: request.walletHash.bytes, to: newHash.bytes) }
    }
    let applied = try await commits.update(
      walletID: request.wallet.id, oldLeaf: request.walletHash, newLeaf: newHash, proof: proof, ticket: ticket)
    logger.info(
      "wallet configuration changed",
      metadata: ["wallet.id": "\(request.wallet.id)", "vault.sequence": "\(applied.sequence)"])
    return RequestResult(output: [], walletData: encoding, sealedSeed: resealed.bytes, change: applied)
  }

  /// Removes a wallet (its leaf becomes zero, so its sealed seed never opens again),
  /// approved by its approvers' quorum.
  public func removeWallet(
    envelope envelopeBytes: [UInt8], approvals approvalBytes: [[UInt8]], walletData: [UInt8], proof: WalletProof
  ) async throws -> RequestResult {
    let ticket = commits.begin()
    defer { ticket.close() }
    let request = try check(envelopeBytes, approvalBytes, walletData, proof)
    guard case .removeWallet = request.envelope.operation else {
      throw RequestError(.wrongOperation, "a \(request.envelope.operation.name) request was sent to remove a wallet")
    }
    let applied = try await commits.update(
      walletID: request.wallet.id, oldLeaf: request.walletHash, newLeaf: .zero, proof: proof, ticket: ticket)
    logger.info(
      "wallet removed", metadata: ["wallet.id": "\(request.wallet.id)", "vault.sequence": "\(applied.sequence)"])
    return RequestResult(output: [], walletData: [], sealedSeed: [], change: applied)
  }

  /// Signs what a `sign-eip1559` or `sign-personal-message` envelope asks for, with the key at
  /// the envelope's path, after its approvals, the envelope checks and the policy. The output
  /// is the raw signed transaction or the 65-byte personal-message signature.
  public func sign(
    envelope envelopeBytes: [UInt8], approvals approvalBytes: [[UInt8]], walletData: [UInt8], sealedSeed: [UInt8],
    proof: WalletProof
  ) async throws -> RequestResult {
    let ticket = commits.begin()
    defer { ticket.close() }
    let request = try check(envelopeBytes, approvalBytes, walletData, proof)
    let envelope = request.envelope
    let spend: PolicyCheck.Spend?
    let digest: [UInt8]
    switch envelope.operation {
    case .signEIP1559(let transaction):
      spend = PolicyCheck.Spend(value: transaction.value, destination: transaction.to)
      digest = EthereumSigning.signingHash(transaction)
    case .signPersonalMessage(let message):
      spend = nil
      digest = EthereumSigning.personalMessageHash(message)
    default:
      throw RequestError(.wrongOperation, "a \(envelope.operation.name) request was sent to sign")
    }
    let wallet = request.wallet
    guard wallet.custodial else {
      throw RequestError(
        .unsupported, "wallet \(wallet.id) is non-custodial; this version signs for custodial wallets only")
    }
    guard wallet.curve == .secp256k1 else {
      throw RequestError(.unsupported, "wallet \(wallet.id) has ed25519 keys; Ethereum signs with secp256k1")
    }
    var updated = wallet
    updated.policyState = try PolicyCheck.check(
      wallet.policy, state: wallet.policyState, spend: spend, now: request.now)
    updated.requestNonce = envelope.nonce
    updated.approvers = request.approvers
    let encoding = try CustodyVault.encode(updated)
    let newHash = Hash256.sha256(encoding)
    let sealed = try CustodyVault.sealedSeed(sealedSeed)
    let scheme = try CustodyVault.scheme(of: wallet)
    let path = DerivationPath(envelope.chain!.path.map(ChildIndex.init(rawValue:)))
    // The token is held only for its own calls (unseal, then re-seal), so a request computing
    // its key and signature never keeps another one from the token.
    let seed = try await pool.withVault { vault in
      try CustodyVault.mapSealing { try vault.sealer.open(sealed, walletHash: request.walletHash.bytes) }
    }
    let signature = try CustodyVault.signDigest(digest, seed: seed, scheme: scheme, path: path, pool: pool)
    let resealed = try await pool.withVault { vault in try vault.sealer.seal(seed, walletHash: newHash.bytes) }
    guard let recoveryID = signature.recoveryID, recoveryID < 2 else {
      throw VaultError(.signatureCheckFailed, "the signature's recovery id does not fit Ethereum's y parity")
    }
    let output: [UInt8]
    switch envelope.operation {
    case .signEIP1559(let transaction):
      output = EthereumSigning.signedTransaction(transaction, signature: signature.signature, yParity: recoveryID)
    default:
      output = signature.signature + [27 + recoveryID]
    }
    let applied = try await commits.update(
      walletID: wallet.id, oldLeaf: request.walletHash, newLeaf: newHash, proof: proof, ticket: ticket)
    logger.debug(
      "signed",
      metadata: [
        "wallet.id": "\(wallet.id)", "vault.operation": "\(envelope.operation.name)",
        "vault.sequence": "\(applied.sequence)",
      ])
    return RequestResult(output: output, walletData: encoding, sealedSeed: resealed.bytes, change: applied)
  }

  // MARK: Public information

  /// The public key (and xpub, for `network`) at `path` of a wallet's seed. No approvals: it is
  /// public.
  public func publicKey(
    walletData: [UInt8], sealedSeed: [UInt8], path: [UInt32], network: ExtendedKeyNetwork = .mainnet
  ) async throws -> WalletPublicKey {
    let location = try CustodyVault.location(walletData, sealedSeed, path)
    return try await pool.withVault { vault in
      try CustodyVault.mapSealing { try vault.publicKey(at: location, network: network) }
    }
  }

  /// The address of `kind` at `path` (by default Ethereum's m/44'/60'/0'/0/0) of a wallet's
  /// seed: the sender of the transactions the vault signs for that path.
  public func address(
    _ kind: AddressKind = .ethereum, walletData: [UInt8], sealedSeed: [UInt8],
    path: [UInt32] = ChainData.defaultEthereumPath
  ) async throws -> String {
    let location = try CustodyVault.location(walletData, sealedSeed, path)
    return try await pool.withVault { vault in try CustodyVault.mapSealing { try vault.address(kind, at: location) } }
  }

  // MARK: Checks shared by requests on an existing wallet

  /// A request on an existing wallet after steps 1 to 3: decoded, proven, approved, and its
  /// envelope matched to the wallet.
  struct CheckedRequest {
    let envelope: RequestEnvelope
    let wallet: WalletData
    let walletHash: Hash256
    /// The wallet's approvers with the counters the approvals reported.
    let approvers: [Approver]
    let now: UInt64
  }

  func check(
    _ envelopeBytes: [UInt8], _ approvalBytes: [[UInt8]], _ walletData: [UInt8], _ proof: WalletProof
  ) throws(RequestError) -> CheckedRequest {
    let envelope = try CustodyVault.decodeEnvelope(envelopeBytes)
    let approvals = try CustodyVault.decodeApprovals(approvalBytes)
    let wallet: WalletData
    do {
      wallet = try WalletData.decode(walletData)
    } catch {
      throw RequestError(.malformedWalletData, "\(error)")
    }
    let walletHash = Hash256.sha256(walletData)
    try commits.verify(walletID: wallet.id, leaf: walletHash, proof: proof)
    let now = clock.now()
    let approvers = try ApprovalCheck.verify(
      envelope: envelopeBytes, approvals: approvals, approvers: wallet.approvers, required: Int(wallet.threshold))
    guard envelope.walletID == wallet.id else {
      throw RequestError(
        .walletMismatch, "the request is for wallet \(envelope.walletID), the wallet data for \(wallet.id)")
    }
    guard envelope.walletHash == walletHash else {
      throw RequestError(
        .staleWalletHash,
        "the request was made against wallet data \(envelope.walletHash.hex), not the current \(walletHash.hex)")
    }
    guard envelope.nonce > wallet.requestNonce else {
      throw RequestError(
        .replayedNonce, "request nonce \(envelope.nonce) is not greater than the wallet's last, \(wallet.requestNonce)")
    }
    guard now < envelope.expiry else { throw CustodyVault.expired(envelope, now: now) }
    return CheckedRequest(envelope: envelope, wallet: wallet, walletHash: walletHash, approvers: approvers, now: now)
  }

  /// The ECDSA signature of `digest` by the key at `path` of `seed`, checked before it is
  /// returned; the private key is zeroed when this returns.
  static func signDigest(
    _ digest: [UInt8], seed: SecretBytes, scheme: DerivationScheme, path: DerivationPath, pool: SessionPool
  ) throws -> VaultSignature {
    let (privateKey, publicKey) = try pool.derivation.signingKey(seed: seed, scheme: scheme, path: path)
    return try pool.signer.sign(
      digest, algorithm: .ecdsaSecp256k1, privateKey: privateKey, publicKey: publicKey, auxiliary: [])
  }

  static func expired(_ envelope: RequestEnvelope, now: UInt64) -> RequestError {
    RequestError(.expired, "the request expired at Unix \(envelope.expiry); it is \(now)")
  }

  static func decodeEnvelope(_ bytes: [UInt8]) throws(RequestError) -> RequestEnvelope {
    do {
      return try RequestEnvelope.decode(bytes)
    } catch {
      throw RequestError(error.code == .cbor ? .nonCanonicalEnvelope : .malformedEnvelope, "\(error)")
    }
  }

  static func decodeApprovals(_ encodings: [[UInt8]]) throws(RequestError) -> [Approval] {
    guard encodings.count <= WalletData.maxApprovers else {
      throw RequestError(
        .malformedApproval, "\(encodings.count) approvals; a wallet has at most \(WalletData.maxApprovers) approvers")
    }
    var approvals = [Approval]()
    for encoding in encodings {
      do {
        approvals.append(try Approval.decode(encoding))
      } catch {
        throw RequestError(.malformedApproval, "\(error)")
      }
    }
    return approvals
  }

  static func encode(_ wallet: WalletData) throws(RequestError) -> [UInt8] {
    do {
      return try wallet.encoded()
    } catch {
      throw RequestError(.malformedEnvelope, "the wallet data the request makes is not valid: \(error)")
    }
  }

  static func sealedSeed(_ bytes: [UInt8]) throws(RequestError) -> SealedSeed {
    do {
      return try SealedSeed(bytes: bytes)
    } catch {
      throw RequestError(.sealedSeedMismatch, "\(error)")
    }
  }

  static func scheme(of wallet: WalletData) throws(RequestError) -> DerivationScheme {
    switch (wallet.curve, wallet.derivation) {
    case (.secp256k1, .bip32): .bip32Secp256k1
    case (.secp256k1, .slip10): .slip10Secp256k1
    case (.ed25519, .slip10): .slip10Ed25519
    case (.ed25519, .bip32): throw RequestError(.malformedWalletData, "BIP-32 derives secp256k1 keys only")
    }
  }

  static func location(_ walletData: [UInt8], _ sealedSeed: [UInt8], _ path: [UInt32]) throws -> WalletKeyLocation {
    let wallet: WalletData
    do {
      wallet = try WalletData.decode(walletData)
    } catch {
      throw RequestError(.malformedWalletData, "\(error)")
    }
    guard path.count <= ChainData.maxPathLength else {
      throw RequestError(.malformedEnvelope, "a key path has at most \(ChainData.maxPathLength) levels")
    }
    return WalletKeyLocation(
      sealedSeed: try CustodyVault.sealedSeed(sealedSeed), walletHash: Hash256.sha256(walletData).bytes,
      scheme: try scheme(of: wallet), path: DerivationPath(path.map(ChildIndex.init(rawValue:))))
  }

  /// Runs `body`, reporting a sealed seed that does not open as the request's fault.
  static func mapSealing<R>(_ body: () throws -> R) throws -> R {
    do {
      return try body()
    } catch let error as VaultError where error.code == .sealedSeedDoesNotOpen || error.code == .sealedSeedMalformed {
      throw RequestError(.sealedSeedMismatch, error.reason)
    }
  }
}

extension CustodyVault: VaultRequestAPI {
  /// The root the token holds durably.
  public func durableRoot() async throws -> RootState { rootState.durable }
}
