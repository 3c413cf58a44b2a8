/// What a client of the vault's request API calls, wherever the vault runs: `CustodyVault` in
/// the same process, or a device behind its socket (VaultWire's `RemoteVault`, over a
/// `VaultClient` and a Crypto User session). Code written against this protocol (a server's
/// request workflow, `custos bench approve`) runs unchanged on either.
///
/// Inputs are the canonical bytes the vault defines (request envelope, approvals, wallet data,
/// sealed seed) and a Merkle proof against a recent root; every change returns a
/// `RequestResult` only once the root recording it is durable. A refusal by the vault is thrown
/// as a `RequestError` with the vault's own code on both sides, so a caller handles
/// `staleProof` (fetch a new proof and retry), `replayedNonce` or `thresholdNotMet` the same
/// way whichever vault it talks to. Failures that are not refusals (a broken connection, a
/// token that failed) are thrown as their own errors.
public protocol VaultRequestAPI: Sendable {
  /// Creates the wallet a `create-wallet` envelope proposes, approved by every proposed
  /// approver; `proof` is of the current leaf, against a tree whose leaf count is still the
  /// vault's running one (the new wallet's id).
  func createWallet(
    envelope: [UInt8], approvals: [[UInt8]], proof: CurrentLeafProof
  ) async throws -> RequestResult

  /// Replaces a wallet's threshold, approvers and policy as an `update-wallet` envelope says.
  func updateWallet(
    envelope: [UInt8], approvals: [[UInt8]], walletData: [UInt8], sealedSeed: [UInt8], proof: WalletProof
  ) async throws -> RequestResult

  /// Removes a wallet (its leaf becomes zero).
  func removeWallet(
    envelope: [UInt8], approvals: [[UInt8]], walletData: [UInt8], proof: WalletProof
  ) async throws -> RequestResult

  /// Signs what a `sign-eip1559` or `sign-personal-message` envelope asks for.
  func sign(
    envelope: [UInt8], approvals: [[UInt8]], walletData: [UInt8], sealedSeed: [UInt8], proof: WalletProof
  ) async throws -> RequestResult

  /// The root the token holds durably (what a server reconciles its tree with).
  func durableRoot() async throws -> RootState
}
