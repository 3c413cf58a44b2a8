import Custody

/// The vault's request API (`VaultRequestAPI`) on a device behind its socket: each call goes
/// through a `VaultClient` with a Crypto User session, and comes back in the vault's own terms.
/// A `VaultOutcome` becomes the `RequestResult` the vault made; a refusal whose `reason` names
/// a `RequestError` code becomes that `RequestError`, so a caller sees `staleProof`,
/// `replayedNonce` or `thresholdNotMet` exactly as it would from `CustodyVault` in its own
/// process. Refusals of the wire itself (`sessionRequired`, `sealed`, `stopping`, a broken
/// connection) stay `VaultWireError`s.
///
/// Many `RemoteVault`s may share one client (one HTTP/2 connection), or each have its own.
public struct RemoteVault: VaultRequestAPI {
  public let client: VaultClient
  public let session: VaultSession

  /// Requests through `client` in `session`.
  public init(client: VaultClient, session: VaultSession) {
    self.client = client
    self.session = session
  }

  public func createWallet(
    envelope: [UInt8], approvals: [[UInt8]], proof: CurrentLeafProof
  ) async throws -> RequestResult {
    let call = VaultCall(creating: envelope, approvals: approvals, proof: proof)
    return try await Self.result { try await client.createWallet(call, session: session) }
  }

  public func updateWallet(
    envelope: [UInt8], approvals: [[UInt8]], walletData: [UInt8], sealedSeed: [UInt8], proof: WalletProof
  ) async throws -> RequestResult {
    let call = Self.call(envelope, approvals, walletData, sealedSeed, proof)
    return try await Self.result { try await client.updateWallet(call, session: session) }
  }

  public func removeWallet(
    envelope: [UInt8], approvals: [[UInt8]], walletData: [UInt8], proof: WalletProof
  ) async throws -> RequestResult {
    let call = Self.call(envelope, approvals, walletData, [], proof)
    return try await Self.result { try await client.removeWallet(call, session: session) }
  }

  public func sign(
    envelope: [UInt8], approvals: [[UInt8]], walletData: [UInt8], sealedSeed: [UInt8], proof: WalletProof
  ) async throws -> RequestResult {
    let call = Self.call(envelope, approvals, walletData, sealedSeed, proof)
    return try await Self.result { try await client.sign(call, session: session) }
  }

  public func durableRoot() async throws -> RootState {
    try await client.rootState(session)
  }

  /// A call on an existing wallet: its leaf is SHA-256 of the wallet data sent.
  private static func call(
    _ envelope: [UInt8], _ approvals: [[UInt8]], _ walletData: [UInt8], _ sealedSeed: [UInt8], _ proof: WalletProof
  ) -> VaultCall {
    VaultCall(
      envelope: envelope, approvals: approvals, walletData: walletData, sealedSeed: sealedSeed,
      proof: ChangeProof(
        proof: MerkleProof(leaf: Hash256.sha256(walletData), siblings: proof.siblings),
        leafCount: proof.anchor.leafCount, root: proof.anchor.root))
  }

  /// The vault's result of a call, or its refusal as the vault's `RequestError`.
  private static func result(
    _ body: () async throws -> VaultOutcome
  ) async throws -> RequestResult {
    let outcome: VaultOutcome
    do {
      outcome = try await body()
    } catch let error as VaultWireError {
      throw RequestError(wire: error) ?? error
    }
    guard let change = outcome.change else {
      throw VaultWireError(.unexpected, "the device answered a change without the change it applied")
    }
    return RequestResult(
      output: outcome.result, walletData: outcome.walletData, sealedSeed: outcome.sealedSeed, change: change)
  }
}

extension RequestError {
  /// The vault's refusal a wire error carries: its `reason` is the `RequestError` code name
  /// (a name this version does not know is kept as it is), its message the vault's sentence.
  /// Nil for refusals of the wire itself, which carry no reason.
  public init?(wire error: VaultWireError) {
    guard let name = error.reason, !name.isEmpty else { return nil }
    self.init(Code(name), error.message)
  }
}
