import Approver
import Custody
import CustosAPI
import Foundation
import HTTPTypes
import OpenAPIRuntime
import OpenAPIURLSession
import Synchronization
import Vault

typealias Schemas = Components.Schemas

/// The HTTP side of `custos bench api`: a customer system (with an API key) and the approvers
/// of every wallet (no key). It creates 2-of-3 wallets (a P-256 bot, an Ed25519 bot and an
/// ES256 software passkey, each approving the creation), then runs complete signing workflows
/// from `clients` concurrent clients: create an EIP-1559 transfer request, two approvers each
/// fetch the envelope, check it and post their approval (the second one's call returns once the
/// vault signed), and the customer fetches the signed transaction.
///
/// Each client is a thread with its own kept-alive connection (`BlockingHTTPConnection`); the
/// bodies it sends are openapi.yaml's generated types encoded as JSON, and it reads of the
/// answers what it needs. The clients share the machine with the server and the device, so they
/// do the least a real client does: the generated client over an event-loop transport cost them
/// about 1.7 ms of CPU per workflow, most of it in the OpenAPI runtime, decoding every field of
/// every answer, and the hops between threads.
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

  let baseURL: URL
  /// The customer system's Authorization header.
  let authorization: String
  /// The customer system's client, generated from openapi.yaml (over URLSession, as the
  /// approver's), for the device's status before and after the measurement.
  let customer: Client
  private(set) var wallets: [Wallet] = []

  init(baseURL: String, apiKey: String) throws {
    guard let url = URL(string: baseURL) else { throw CommandFailure("'\(baseURL)' is not a URL") }
    self.baseURL = url
    authorization = "Bearer " + apiKey
    customer = Client(
      serverURL: url, configuration: .custos, transport: URLSessionTransport(), middlewares: [BearerKey(key: apiKey)])
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

  // MARK: Calls on a client's own connection

  /// What the load generator reads of the API's answers (a customer system reads what it
  /// needs; the answers' full schemas are checked by the server's tests).
  struct CreatedRequest: Decodable { let id: String }
  struct ApprovalView: Decodable {
    let envelope: String
    let challenge: String
  }
  struct Receipt: Decodable { let status: String }
  struct RequestView: Decodable {
    struct Result: Decodable {
      let walletId: Int64?
      let signedTransaction: String?
      let transactionHash: String?
    }
    struct Refusal: Decodable {
      let code: String
      let message: String
    }
    let status: String
    let result: Result?
    let failure: Refusal?
  }
  struct AddressList: Decodable {
    struct Entry: Decodable { let address: String }
    let addresses: [Entry]
  }

  /// A connection to the server for one client thread.
  func connect() throws -> BlockingHTTPConnection {
    try BlockingHTTPConnection(url: baseURL, timeout: .seconds(60))
  }

  /// One call: `body` encoded as JSON, the answer decoded when its status is `expected`, else a
  /// failure naming `what` and quoting the answer. The customer's calls carry its API key;
  /// the approvers' none.
  func call<Answer: Decodable>(
    _ connection: BlockingHTTPConnection, _ method: String, _ path: String, asCustomer: Bool,
    body: (some Encodable)? = Optional<Int>.none, expected: Int, _ what: @autoclosure () -> String
  ) throws -> Answer {
    let headers =
      asCustomer
      ? [("Authorization", authorization), ("Accept", "application/json")] : [("Accept", "application/json")]
    let answer = try connection.send(
      method, path, headers: headers, json: try body.map { Array(try Self.encoder.encode($0)) })
    guard answer.status == expected else { throw Failure("\(what()): HTTP \(answer.status) \(answer.text)") }
    do {
      return try Self.decoder.decode(Answer.self, from: Data(answer.body))
    } catch {
      throw Failure("\(what()): an answer that does not decode (\(error)): \(answer.text)")
    }
  }

  private static let encoder = JSONEncoder()
  private static let decoder = JSONDecoder()

  /// Runs `body(0)`, ..., `body(count - 1)` each on a thread of its own (the calls block) and
  /// returns their results once all have returned.
  static func onThreads<T: Sendable>(_ count: Int, _ body: @escaping @Sendable (Int) -> T) async -> [T] {
    let results = Mutex<[Int: T]>([:])
    await withCheckedContinuation { (done: CheckedContinuation<Void, Never>) in
      let remaining = Atomic(count)
      for index in 0..<count {
        let thread = Thread {
          let result = body(index)
          results.withLock { $0[index] = result }
          if remaining.subtract(1, ordering: .acquiringAndReleasing).newValue == 0 { done.resume() }
        }
        thread.name = "custos-bench-client-\(index)"
        thread.start()
      }
      if count == 0 { done.resume() }
    }
    return results.withLock { all in (0..<count).map { all[$0]! } }
  }

  // MARK: Set-up

  /// Creates `count` wallets one at a time (the vault adds one wallet per commit), each
  /// approved by its three approvers, and reads each one's Ethereum address.
  func createWallets(_ count: Int) async throws -> ApproveWorkloadReport.Creation {
    let created = await Self.onThreads(1) { _ in
      Result { () throws -> ([Wallet], [Duration], Double) in try self.createWalletsBlocking(count) }
    }[0]
    let (made, latencies, elapsed) = try created.get()
    wallets += made
    return ApproveWorkloadReport.Creation(
      wallets: count, seconds: elapsed, perSecond: Double(count) / elapsed,
      latency: ApproveWorkloadReport.Latency(latencies))
  }

  private func createWalletsBlocking(_ count: Int) throws -> ([Wallet], [Duration], Double) {
    let connection = try connect()
    defer { connection.close() }
    var made = [Wallet]()
    var latencies = [Duration]()
    let start = ContinuousClock.now
    for _ in 0..<count {
      let wallet = try Wallet()
      let began = ContinuousClock.now
      let proposed: CreatedRequest = try call(
        connection, "POST", "/v1/wallets", asCustomer: true,
        body: Schemas.WalletProposal(threshold: 2, approvers: wallet.proposal), expected: 202, "the wallet proposal")
      for approver in ["bot-a", "bot-b", "carol"] {
        let envelope = try fetchEnvelope(connection, proposed.id)
        _ = try approve(connection, proposed.id, wallet.approval(approver, envelope: envelope))
      }
      let request = try completed(connection, proposed.id)
      guard let id = request.result?.walletId else { throw Failure("wallet creation \(proposed.id) gave no wallet id") }
      latencies.append(ContinuousClock.now - began)
      wallet.id = id
      let addresses: AddressList = try call(
        connection, "GET", "/v1/wallets/\(id)/addresses", asCustomer: true, expected: 200,
        "the addresses of wallet \(id)")
      guard let address = addresses.addresses.first?.address else {
        throw Failure("wallet \(id) has no address")
      }
      wallet.address = address
      made.append(wallet)
    }
    return (made, latencies, seconds(ContinuousClock.now - start))
  }

  // MARK: Workflows

  /// Runs `count` workflows from `clients` concurrent clients, each a thread with its own
  /// connection; client c uses wallets c, c + clients, ... in turn. Outcomes and failures in no
  /// particular order.
  func run(_ count: Int, clients: Int) async -> (outcomes: [Outcome], failures: [String]) {
    let next = TicketCounter()
    let wallets = self.wallets
    let perClient = await Self.onThreads(clients) { client -> ([Outcome], [String]) in
      var outcomes = [Outcome]()
      var failures = [String]()
      let mine = Array(stride(from: client, to: wallets.count, by: clients))
      var connection: BlockingHTTPConnection
      do {
        connection = try self.connect()
      } catch {
        return ([], ["client \(client): \(error)"])
      }
      defer { connection.close() }
      var turn = 0
      while true {
        let index = next.take()
        guard index < count else { break }
        let walletIndex = mine[turn % mine.count]
        turn += 1
        do {
          outcomes.append(try self.workflow(connection, walletIndex, number: index))
        } catch {
          failures.append("wallet \(wallets[walletIndex].id): \(error)")
        }
      }
      return (outcomes, failures)
    }
    return (perClient.flatMap(\.0), perClient.flatMap(\.1))
  }

  /// One workflow on wallet `walletIndex`; `number` chooses which two approvers approve.
  func workflow(_ connection: BlockingHTTPConnection, _ walletIndex: Int, number: Int) throws -> Outcome {
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
    let created: CreatedRequest = try call(
      connection, "POST", "/v1/wallets/\(wallet.id)/requests", asCustomer: true,
      body: Schemas.SigningRequestInput(transaction: transaction), expected: 201, "create request")
    let requestID = created.id
    lap()

    for approver in [pair.0, pair.1] {
      let envelope = try fetchEnvelope(connection, requestID)
      try check(envelope, wallet: wallet, chainNonce: chainNonce)
      lap()
      _ = try approve(connection, requestID, wallet.approval(approver, envelope: envelope))
      lap()
    }
    let request = try completed(connection, requestID)
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
  func fetchEnvelope(_ connection: BlockingHTTPConnection, _ requestID: String) throws -> [UInt8] {
    let view: ApprovalView = try call(
      connection, "GET", "/v1/approvals/\(requestID)", asCustomer: false, expected: 200,
      "fetch envelope of \(requestID)")
    guard let envelope = Base64URL.decode(view.envelope),
      Base64URL.decode(view.challenge) == RequestEnvelope.challenge(of: envelope).bytes
    else { throw Failure("the envelope of \(requestID) does not match its challenge") }
    return envelope
  }

  func approve(
    _ connection: BlockingHTTPConnection, _ requestID: String, _ approval: Schemas.ApprovalSubmission
  ) throws -> Receipt {
    try call(
      connection, "POST", "/v1/approvals/\(requestID)", asCustomer: false, body: approval, expected: 200,
      "approval of \(requestID)")
  }

  /// The request once completed: read from the customer's route (polled while the server still
  /// sends it to the vault, e.g. after its approval call left it to the device keeper).
  func completed(_ connection: BlockingHTTPConnection, _ requestID: String) throws -> RequestView {
    let deadline = ContinuousClock.now + .seconds(30)
    while true {
      let request: RequestView = try call(
        connection, "GET", "/v1/requests/\(requestID)", asCustomer: true, expected: 200, "get request \(requestID)")
      switch request.status {
      case "completed": return request
      case "approved" where ContinuousClock.now < deadline, "submitted" where ContinuousClock.now < deadline:
        Thread.sleep(forTimeInterval: 0.005)
      default:
        throw Failure(
          "request \(requestID) is \(request.status)" + (request.failure.map { ": \($0.code) \($0.message)" } ?? ""))
      }
    }
  }
}

/// Hands out 0, 1, 2, ... to concurrent clients.
final class TicketCounter: Sendable {
  private let value = Atomic<Int>(0)

  func take() -> Int { value.wrappingAdd(1, ordering: .relaxed).oldValue }
}
