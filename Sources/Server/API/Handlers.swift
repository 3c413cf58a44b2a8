import Custody
import CustosAPI
import Foundation
import Logging
import VaultWire

/// The operations of openapi.yaml. Authentication and scopes are checked before a handler runs
/// (`APIKeyMiddleware`, which also names the caller in `APIKeyMiddleware.caller`); a handler
/// throws `APIError` for every refusal and `ErrorMiddleware` writes it as the `Error` body.
struct CustodyAPIHandler: APIProtocol {
  let custodian: Custodian
  let logger: Logger

  private var repository: any CustodyRepository { custodian.repository }

  // MARK: Device

  func getDeviceStatus(_ input: Operations.GetDeviceStatus.Input) async throws -> Operations.GetDeviceStatus.Output {
    let snapshot = custodian.deviceSnapshot
    let tree = try await repository.treeSummary()
    let agreement: Schemas.TreeStatus.AgreementPayload =
      switch await custodian.ledger.agreement {
      case .agreed: .agreed
      case .reconciling: .reconciling
      case .diverged: .diverged
      case .unknown: .unknown
      }
    let state: Schemas.DeviceStatus.StatePayload =
      switch snapshot.status?.state {
      case .sealed: .sealed
      case .ready: .ready
      case .stopping: .stopping
      case nil: .unreachable
      }
    let status = Schemas.DeviceStatus(
      state: state, reachable: snapshot.status != nil, name: snapshot.status?.name, serial: snapshot.status?.serial,
      measurement: snapshot.status.map { Hex.encode($0.measurement) },
      deviceRoot: snapshot.status?.root.map(Show.rootState),
      tree: Schemas.TreeStatus(
        leafCount: Int64(tree.leafCount), root: tree.root.hex, epoch: Int64(tree.epoch),
        wallets: Int64(tree.activeWallets), pendingIntents: Int64(tree.pendingIntents), agreement: agreement),
      checkedAt: snapshot.checkedAt)
    return .ok(.init(body: .json(status)))
  }

  // MARK: Wallets

  func listWallets(_ input: Operations.ListWallets.Input) async throws -> Operations.ListWallets.Output {
    let limit = try Self.limit(input.query.limit)
    let after = try Read.unsigned(input.query.after ?? 0, "after")
    let wallets = try await repository.wallets(after: after, limit: limit + 1)
    let page = wallets.prefix(limit)
    let summaries = page.map { wallet -> Schemas.WalletSummary in
      let data = wallet.walletData.flatMap { try? WalletData.decode($0) }
      return Schemas.WalletSummary(
        id: Int64(wallet.id), status: wallet.status == .active ? .active : .removed,
        threshold: Int64(data?.threshold ?? 0), approverCount: data?.approvers.count ?? 0,
        curve: data?.curve == .ed25519 ? .ed25519 : .secp256k1, walletHash: wallet.walletHash.hex,
        requestNonce: Int64(data?.requestNonce ?? 0))
    }
    return .ok(
      .init(
        body: .json(
          Schemas.WalletList(wallets: summaries, next: wallets.count > limit ? page.last.map { Int64($0.id) } : nil))))
  }

  func createWallet(_ input: Operations.CreateWallet.Input) async throws -> Operations.CreateWallet.Output {
    guard case .json(let proposal) = input.body else { throw APIError(.unsupportedMediaType, "send application/json") }
    let curve: WalletData.Curve = proposal.curve == .ed25519 ? .ed25519 : .secp256k1
    let derivation: WalletData.DerivationScheme =
      switch proposal.derivation {
      case .slip10?: .slip10
      case .bip32?: .bip32
      case nil: curve == .ed25519 ? .slip10 : .bip32
      }
    let configuration = WalletConfiguration(
      threshold: try Read.threshold(proposal.threshold), custodial: true,
      approvers: try Read.approvers(proposal.approvers), curve: curve, derivation: derivation,
      policy: try Read.policy(proposal.policy))
    let request = try await custodian.proposeWallet(
      configuration, expiresIn: try Read.expiry(proposal.expiresInSeconds), apiKeyID: APIKeyMiddleware.caller?.id)
    return .accepted(.init(body: .json(Show.request(request))))
  }

  func getWallet(_ input: Operations.GetWallet.Input) async throws -> Operations.GetWallet.Output {
    let walletID = try Read.unsigned(input.path.walletId, "walletId", in: 1...Int64.max)
    let found: (wallet: StoredWallet, proof: WalletProof, path: MerklePath)
    do {
      found = try await repository.walletProof(walletID)
    } catch let error as LedgerError where error.code == .notFound {
      throw APIError(.walletNotFound, "there is no wallet \(walletID)")
    }
    let data = found.wallet.walletData.flatMap { try? WalletData.decode($0) }
    // The device's root now, to show whether the proof's root is the one it holds.
    let deviceRoot = try? await custodian.device.rootState()
    let proof = Schemas.WalletProof(
      node: Int64(found.path.node), path: found.path.description, leaf: found.wallet.walletHash.hex,
      siblings: found.proof.siblings.map(\.hex), leafCount: Int64(found.proof.anchor.leafCount),
      root: found.proof.anchor.root.hex, deviceEpoch: deviceRoot.map { Int64($0.epoch) },
      deviceRootMatches: deviceRoot.map {
        $0.root == found.proof.anchor.root && $0.leafCount == found.proof.anchor.leafCount
      } ?? false)
    let wallet = Schemas.Wallet(
      id: Int64(walletID), status: found.wallet.status == .active ? .active : .removed,
      threshold: Int64(data?.threshold ?? 0), custodial: data?.custodial ?? true,
      curve: data?.curve == .ed25519 ? .ed25519 : .secp256k1,
      derivation: data?.derivation == .slip10 ? .slip10 : .bip32,
      approvers: data?.approvers.map(Show.approver) ?? [], policy: Show.policy(data?.policy ?? Policy()),
      requestNonce: Int64(data?.requestNonce ?? 0), walletHash: found.wallet.walletHash.hex,
      walletData: found.wallet.walletData.map { Base64URL.encode($0) }, proof: proof)
    return .ok(.init(body: .json(wallet)))
  }

  func removeWallet(_ input: Operations.RemoveWallet.Input) async throws -> Operations.RemoveWallet.Output {
    let walletID = try Read.unsigned(input.path.walletId, "walletId", in: 1...Int64.max)
    let request = try await custodian.propose(
      .removeWallet, walletID: walletID, path: nil, expiresIn: nil, apiKeyID: APIKeyMiddleware.caller?.id)
    return .accepted(.init(body: .json(Show.request(request))))
  }

  func changeWallet(_ input: Operations.ChangeWallet.Input) async throws -> Operations.ChangeWallet.Output {
    let walletID = try Read.unsigned(input.path.walletId, "walletId", in: 1...Int64.max)
    guard case .json(let change) = input.body else { throw APIError(.unsupportedMediaType, "send application/json") }
    let configuration = WalletConfigurationChange(
      threshold: try Read.threshold(change.threshold), approvers: try Read.approvers(change.approvers),
      policy: try Read.policy(change.policy))
    let request = try await custodian.propose(
      .updateWallet(configuration), walletID: walletID, path: nil, expiresIn: try Read.expiry(change.expiresInSeconds),
      apiKeyID: APIKeyMiddleware.caller?.id)
    return .accepted(.init(body: .json(Show.request(request))))
  }

  func getWalletAddresses(
    _ input: Operations.GetWalletAddresses.Input
  ) async throws -> Operations.GetWalletAddresses.Output {
    let walletID = try Read.unsigned(input.path.walletId, "walletId", in: 1...Int64.max)
    let path = try Read.path(input.query.path) ?? ChainData.defaultEthereumPath
    let (wallet, _) = try await custodian.activeWallet(walletID)
    guard let data = wallet.walletData, let seed = wallet.sealedSeed else {
      throw APIError(.walletRemoved, "wallet \(walletID) was removed")
    }
    let pathText = ChainData(chain: "eip155:1", path: path).pathText
    let info: PublicKeyInfo
    do {
      info = try await custodian.device.publicKey(
        walletData: data, sealedSeed: seed, path: pathText, address: .ethereum)
    } catch {
      throw Self.deviceError(error)
    }
    guard let address = info.address else {
      throw APIError(.vaultRefused, "the vault answered without an address")
    }
    return .ok(
      .init(
        body: .json(
          Schemas.WalletAddresses(
            walletId: Int64(walletID),
            addresses: [
              .init(kind: .ethereum, path: info.path, address: address, publicKey: "0x" + Hex.encode(info.publicKey))
            ]))))
  }

  // MARK: Requests

  func listWalletRequests(
    _ input: Operations.ListWalletRequests.Input
  ) async throws -> Operations.ListWalletRequests.Output {
    let walletID = try Read.unsigned(input.path.walletId, "walletId", in: 1...Int64.max)
    let limit = try Self.limit(input.query.limit)
    guard try await repository.wallet(walletID) != nil else {
      throw APIError(.walletNotFound, "there is no wallet \(walletID)")
    }
    let requests = try await repository.requests(ofWallet: walletID, limit: limit)
    return .ok(.init(body: .json(Schemas.RequestList(requests: requests.map(Show.request)))))
  }

  func createSigningRequest(
    _ input: Operations.CreateSigningRequest.Input
  ) async throws -> Operations.CreateSigningRequest.Output {
    let walletID = try Read.unsigned(input.path.walletId, "walletId", in: 1...Int64.max)
    guard case .json(let body) = input.body else { throw APIError(.unsupportedMediaType, "send application/json") }
    let operation = try Read.operation(body)
    let request = try await custodian.propose(
      operation, walletID: walletID, path: try Read.path(body.path), expiresIn: try Read.expiry(body.expiresInSeconds),
      apiKeyID: APIKeyMiddleware.caller?.id)
    return .created(.init(body: .json(Show.request(request))))
  }

  func getRequest(_ input: Operations.GetRequest.Input) async throws -> Operations.GetRequest.Output {
    let request = try await custodian.existingRequest(try Self.requestID(input.path.requestId))
    return .ok(.init(body: .json(Show.request(request))))
  }

  func cancelRequest(_ input: Operations.CancelRequest.Input) async throws -> Operations.CancelRequest.Output {
    let request = try await custodian.cancel(try Self.requestID(input.path.requestId))
    return .ok(.init(body: .json(Show.request(request))))
  }

  // MARK: Approvals

  func getApprovalRequest(
    _ input: Operations.GetApprovalRequest.Input
  ) async throws -> Operations.GetApprovalRequest.Output {
    let (request, wallet) = try await custodian.existingRequestAndWallet(try Self.requestID(input.path.requestId))
    let envelope: RequestEnvelope
    do {
      envelope = try RequestEnvelope.decode(request.envelope)
    } catch {
      throw custodian.internalError("decoding a stored envelope", error)
    }
    let approved = Set(request.approvals.map(\.approverID))
    let enrolled: [Approver]
    if case .createWallet(let configuration) = envelope.operation {
      enrolled = configuration.approvers
    } else if let data = wallet?.walletData.flatMap({ try? WalletData.decode($0) }) {
      enrolled = data.approvers
    } else {
      enrolled = []
    }
    let approvers = request.approverIDs.map { id -> Schemas.ApprovalRequest.ApproversPayloadPayload in
      let approver = enrolled.first { $0.id == id }
      if case .passkey(let passkey)? = approver?.credential {
        return .init(
          id: id, kind: .passkey, approved: approved.contains(id), credentialId: Base64URL.encode(passkey.credentialID),
          rpId: passkey.rpID)
      }
      return .init(id: id, kind: .bot, approved: approved.contains(id))
    }
    return .ok(
      .init(
        body: .json(
          Schemas.ApprovalRequest(
            id: request.id, kind: request.kind.rawValue, walletId: request.walletID.map { Int64($0) },
            status: Show.status(request.status), envelope: Base64URL.encode(request.envelope),
            challenge: Base64URL.encode(request.envelopeHash.bytes), rendering: envelope.rendered(),
            threshold: request.threshold, approvers: approvers, expiresAt: request.expiresAt))))
  }

  func submitApproval(_ input: Operations.SubmitApproval.Input) async throws -> Operations.SubmitApproval.Output {
    let requestID = try Self.requestID(input.path.requestId)
    guard case .json(let body) = input.body else { throw APIError(.unsupportedMediaType, "send application/json") }
    let approval = try Read.approval(body)
    let request = try await custodian.submitApproval(approval, to: requestID)
    return .ok(
      .init(
        body: .json(
          Schemas.ApprovalReceipt(
            requestId: request.id, status: Show.status(request.status), approvals: request.approvals.count,
            threshold: request.threshold, result: Show.result(request), failure: Show.failure(request)))))
  }

  // MARK: Helpers

  static func limit(_ value: Int?) throws(APIError) -> Int {
    let limit = value ?? 50
    guard (1...500).contains(limit) else { throw APIError(.invalidValue, "a limit is 1 to 500", field: "limit") }
    return limit
  }

  static func requestID(_ text: String) throws(APIError) -> String {
    let hex = text.dropFirst(3)
    guard text.hasPrefix("rq_"), hex.utf8.count == 32,
      hex.utf8.allSatisfy({ (0x30...0x39).contains($0) || (0x61...0x66).contains($0) })
    else {
      throw APIError(.requestNotFound, "'\(text.prefix(64))' is not a request id (rq_ and 32 hex digits)")
    }
    return text
  }

  /// A device failure of a read-only call (public keys) as the API answers it.
  static func deviceError(_ error: VaultWireError) -> APIError {
    switch error.code {
    case .sealed: APIError(.deviceSealed, "the device is SEALED: a quorum of unseal key holders must unseal it first")
    case .vaultRefused, .invalidArgument:
      APIError(.vaultRefused, error.message, vaultCode: error.reason ?? error.code.name)
    default: APIError(.deviceUnavailable, "the device did not answer: \(error.code): \(error.message)")
    }
  }
}
