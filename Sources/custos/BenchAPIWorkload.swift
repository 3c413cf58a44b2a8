import Approver
import Custody
import CustosAPI
import Foundation
import HTTPTypes
import OpenAPIRuntime
import Synchronization
import Vault

typealias Schemas = Components.Schemas

/// The HTTP side of `custos bench api`: a customer system (with an API key) and the approvers
/// of every wallet (no key), through the client generated from openapi.yaml over kept-alive
/// HTTP/1.1 connections (`KeepAliveTransport`). It creates 2-of-3 wallets (a P-256 bot, an
/// Ed25519 bot and an ES256 software passkey, each approving the creation), then runs complete
/// signing workflows from `clients` concurrent clients: create an EIP-1559 transfer request, two
/// approvers each fetch the envelope, check it and post their approval (the second one's call
/// returns once the vault signed), and the customer fetches the signed transaction.
///
/// Client c works only on its own wallets (c, c + clients, ...): a wallet takes one signature
/// at a time, because every request binds the wallet's current data and nonce and each
/// signature changes them (a second request made meanwhile would be superseded).
final class APIWorkload: @unchecked Sendable {
  /// The steps of one workflow, in order.
  static let steps = [
    "create request (POST /v1/wallets/{id}/requests)",
    "approver 1 fetches the envelope (GET /v1/approvals/{id})",
    "approver 1 approves (POST /v1/approvals/{id})",
    "approver 2 fetches the envelope (GET /v1/approvals/{id})",
    "approver 2 approves; the vault signs (POST /v1/approvals/{id})",
    "customer fetches the signature (GET /v1/requests/{id})",
  ]

  /// A wallet and its approvers, on the client side.
  final class Wallet: @unchecked Sendable {
    let bot: SoftwareBot
    let edBot: SoftwareBot
    let passkey: SoftwareAuthenticator
    var id: Int64 = 0
    var address = ""
    /// The next transaction nonce on the chain (one client uses the wallet at a time).
    var chainNonce: Int64 = 0

    init() throws {
      bot = try SoftwareBot(.p256)
      edBot = try SoftwareBot(.ed25519)
      passkey = try SoftwareAuthenticator(.es256)
    }

    var proposal: [Schemas.ApproverInput] {
      [
        .init(id: "bot-a", bot: .init(algorithm: .p256, publicKey: Base64URL.encode(bot.botKey.publicKey))),
        .init(id: "bot-b", bot: .init(algorithm: .ed25519, publicKey: Base64URL.encode(edBot.botKey.publicKey))),
        .init(
          id: "carol",
          passkey: .init(
            credentialId: Base64URL.encode(passkey.credentialID), publicKey: Base64URL.encode(passkey.coseKey),
            rpId: passkey.rpID, allowedOrigins: [passkey.origin])),
      ]
    }

    /// `approver`'s approval of `envelope`, as the approval route takes it.
    func approval(_ approver: String, envelope: [UInt8]) -> Schemas.ApprovalSubmission {
      switch approver {
      case "bot-a": return .init(approverId: approver, botSignature: Base64URL.encode(bot.signature(over: envelope)))
      case "bot-b": return .init(approverId: approver, botSignature: Base64URL.encode(edBot.signature(over: envelope)))
      default:
        let assertion = passkey.assert(challenge: RequestEnvelope.challenge(of: envelope).bytes)
        return .init(
          approverId: approver,
          passkey: .init(
            credentialId: Base64URL.encode(assertion.credentialID),
            authenticatorData: Base64URL.encode(assertion.authenticatorData),
            clientDataJSON: Base64URL.encode(assertion.clientDataJSON),
            signature: Base64URL.encode(assertion.signature)))
      }
    }
  }

  /// A failure of one workflow, named by the step.
  struct Failure: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
  }

  /// What one workflow produced.
  struct Outcome: Sendable {
    let walletIndex: Int
    let chainNonce: Int64
    /// Per step, then the whole.
    let steps: [Duration]
    let total: Duration
    let signedTransaction: [UInt8]
    let transactionHash: String
  }

  static let destination = "0x52908400098527886E0F7030069857D2E4169EE7"
  static let value = "1000000000000000"

  let http: KeepAliveTransport
  /// The customer system: every call with the API key.
  let customer: Client
  /// The approvers: no key.
  let approvers: Client
  private(set) var wallets: [Wallet] = []

  init(baseURL: String, apiKey: String) throws {
    guard let url = URL(string: baseURL) else { throw CommandFailure("'\(baseURL)' is not a URL") }
    http = try KeepAliveTransport(url: url, timeout: .seconds(60))
    customer = Client(serverURL: url, configuration: .custos, transport: http, middlewares: [BearerKey(key: apiKey)])
    approvers = Client(serverURL: url, configuration: .custos, transport: http)
  }

  func shutdown() async {
    http.shutdown()
  }

  // MARK: Set-up

  /// Waits (at most `seconds`) until the server says the device is READY and its tree agrees.
  func waitForAgreement(seconds: Double = 60) async throws -> Schemas.DeviceStatus {
    let deadline = ContinuousClock.now + .milliseconds(Int(seconds * 1000))
    var last = "no answer"
    while ContinuousClock.now < deadline {
      do {
        let status = try await customer.getDeviceStatus().ok.body.json
        if status.state == .ready, status.tree.agreement == .agreed { return status }
        last = "device \(status.state.rawValue), tree \(status.tree.agreement.rawValue)"
      } catch {
        last = "\(error)"
      }
      try await Task.sleep(for: .milliseconds(50))
    }
    throw CommandFailure("the server did not agree with a READY device in \(Int(seconds)) s (\(last))")
  }

  /// Whether the device's root, as the server last read it (it polls the device), is the
  /// server's tree; asked again for a few seconds until it is.
  func deviceRootAgrees(seconds: Double = 5) async throws -> (agrees: Bool, status: Schemas.DeviceStatus) {
    let deadline = ContinuousClock.now + .milliseconds(Int(seconds * 1000))
    while true {
      let status = try await customer.getDeviceStatus().ok.body.json
      let agrees =
        status.deviceRoot.map { $0.root == status.tree.root && $0.leafCount == status.tree.leafCount } ?? false
      if agrees || ContinuousClock.now >= deadline { return (agrees, status) }
      try await Task.sleep(for: .milliseconds(50))
    }
  }

  /// Creates `count` wallets one at a time (the vault adds one wallet per commit), each
  /// approved by its three approvers, and reads each one's Ethereum address.
  func createWallets(_ count: Int) async throws -> ApproveWorkloadReport.Creation {
    var latencies = [Duration]()
    let start = ContinuousClock.now
    for _ in 0..<count {
      let wallet = try Wallet()
      let began = ContinuousClock.now
      let proposed = try await customer.createWallet(
        body: .json(.init(threshold: 2, approvers: wallet.proposal)))
      guard case .accepted(let accepted) = proposed else { throw Failure("the wallet proposal: \(proposed)") }
      let requestID = try accepted.body.json.id
      var last: Schemas.ApprovalReceipt? = nil
      for approver in ["bot-a", "bot-b", "carol"] {
        let envelope = try await fetchEnvelope(requestID)
        last = try await approve(requestID, wallet.approval(approver, envelope: envelope))
      }
      let request = try await completed(requestID, last!)
      guard let id = request.result?.walletId else { throw Failure("wallet creation \(requestID) gave no wallet id") }
      latencies.append(ContinuousClock.now - began)
      wallet.id = id
      let addresses = try await customer.getWalletAddresses(path: .init(walletId: id))
      guard case .ok(let ok) = addresses, let address = try ok.body.json.addresses.first?.address else {
        throw Failure("the addresses of wallet \(id): \(addresses)")
      }
      wallet.address = address
      wallets.append(wallet)
    }
    let elapsed = seconds(ContinuousClock.now - start)
    return ApproveWorkloadReport.Creation(
      wallets: count, seconds: elapsed, perSecond: Double(count) / elapsed,
      latency: ApproveWorkloadReport.Latency(latencies))
  }

  // MARK: Workflows

  /// Runs `count` workflows from `clients` concurrent clients; client c uses wallets c,
  /// c + clients, ... in turn. Outcomes and failures in no particular order.
  func run(_ count: Int, clients: Int) async -> (outcomes: [Outcome], failures: [String]) {
    let next = TicketCounter()
    let wallets = self.wallets
    return await withTaskGroup(of: ([Outcome], [String]).self) { group in
      for client in 0..<clients {
        group.addTask {
          var outcomes = [Outcome]()
          var failures = [String]()
          let mine = Array(stride(from: client, to: wallets.count, by: clients))
          var turn = 0
          while true {
            let index = next.take()
            guard index < count else { break }
            let walletIndex = mine[turn % mine.count]
            turn += 1
            do {
              outcomes.append(try await self.workflow(walletIndex, number: index))
            } catch {
              failures.append("wallet \(wallets[walletIndex].id): \(error)")
            }
          }
          return (outcomes, failures)
        }
      }
      var outcomes = [Outcome]()
      var failures = [String]()
      for await (some, failed) in group {
        outcomes += some
        failures += failed
      }
      return (outcomes, failures)
    }
  }

  /// One workflow on wallet `walletIndex`; `number` chooses which two approvers approve.
  func workflow(_ walletIndex: Int, number: Int) async throws -> Outcome {
    let wallet = wallets[walletIndex]
    let chainNonce = wallet.chainNonce
    let pair = [("bot-a", "bot-b"), ("bot-b", "carol"), ("bot-a", "carol")][number % 3]
    var steps = [Duration]()
    let start = ContinuousClock.now
    var mark = start
    func lap() {
      let now = ContinuousClock.now
      steps.append(now - mark)
      mark = now
    }

    let transaction = Schemas.EIP1559TransactionInput(
      chainId: 1, nonce: chainNonce, maxPriorityFeePerGasWei: "1500000000", maxFeePerGasWei: "40000000000",
      gasLimit: 21_000, to: Self.destination, valueWei: Self.value)
    let created = try await customer.createSigningRequest(
      path: .init(walletId: wallet.id), body: .json(.init(transaction: transaction)))
    guard case .created(let body) = created else { throw Failure("create request: \(created)") }
    let requestID = try body.body.json.id
    lap()

    var receipt: Schemas.ApprovalReceipt? = nil
    for approver in [pair.0, pair.1] {
      let envelope = try await fetchEnvelope(requestID)
      try check(envelope, wallet: wallet, chainNonce: chainNonce)
      lap()
      receipt = try await approve(requestID, wallet.approval(approver, envelope: envelope))
      lap()
    }
    let request = try await completed(requestID, receipt!)
    lap()
    guard let signed = request.result?.signedTransaction.flatMap({ Hex.decode($0) }),
      let hash = request.result?.transactionHash
    else { throw Failure("request \(requestID) completed without a signed transaction") }
    wallet.chainNonce += 1
    return Outcome(
      walletIndex: walletIndex, chainNonce: chainNonce, steps: steps, total: ContinuousClock.now - start,
      signedTransaction: signed, transactionHash: hash)
  }

  /// What an approver checks before signing: the envelope decodes (only canonical encodings
  /// do), and it is the transfer the customer asked for, on this wallet.
  func check(_ envelope: [UInt8], wallet: Wallet, chainNonce: Int64) throws {
    let decoded = try RequestEnvelope.decode(envelope)
    guard decoded.walletID == UInt64(wallet.id), case .signEIP1559(let transaction) = decoded.operation,
      transaction.nonce == UInt64(chainNonce), transaction.value == Amount(decimal: Self.value),
      EthereumAddress.checksummed(transaction.to) == Self.destination
    else { throw Failure("the envelope is not the transfer asked for on wallet \(wallet.id)") }
  }

  /// The envelope of a request, from the approval route (checked against its challenge).
  func fetchEnvelope(_ requestID: String) async throws -> [UInt8] {
    let answer = try await approvers.getApprovalRequest(path: .init(requestId: requestID))
    guard case .ok(let ok) = answer else { throw Failure("fetch envelope of \(requestID): \(answer)") }
    let body = try ok.body.json
    guard let envelope = Base64URL.decode(body.envelope),
      Base64URL.decode(body.challenge) == RequestEnvelope.challenge(of: envelope).bytes
    else { throw Failure("the envelope of \(requestID) does not match its challenge") }
    return envelope
  }

  func approve(_ requestID: String, _ approval: Schemas.ApprovalSubmission) async throws -> Schemas.ApprovalReceipt {
    let answer = try await approvers.submitApproval(path: .init(requestId: requestID), body: .json(approval))
    guard case .ok(let ok) = answer else { throw Failure("approval of \(requestID): \(answer)") }
    return try ok.body.json
  }

  /// The request once completed: read from the customer's route (polled while the server still
  /// sends it to the vault, e.g. after its approval call left it to the device keeper).
  func completed(_ requestID: String, _ receipt: Schemas.ApprovalReceipt) async throws -> Schemas.Request {
    let deadline = ContinuousClock.now + .seconds(30)
    while true {
      let answer = try await customer.getRequest(path: .init(requestId: requestID))
      guard case .ok(let ok) = answer else { throw Failure("get request \(requestID): \(answer)") }
      let request = try ok.body.json
      switch request.status {
      case .completed: return request
      case .approved where ContinuousClock.now < deadline, .submitted where ContinuousClock.now < deadline:
        try await Task.sleep(for: .milliseconds(5))
      default:
        throw Failure(
          "request \(requestID) is \(request.status.rawValue) (approval receipt: \(receipt.status.rawValue))"
            + (request.failure.map { ": \($0.code) \($0.message)" } ?? ""))
      }
    }
  }
}

/// Hands out 0, 1, 2, ... to concurrent clients.
final class TicketCounter: Sendable {
  private let value = Atomic<Int>(0)

  func take() -> Int { value.wrappingAdd(1, ordering: .relaxed).oldValue }
}
