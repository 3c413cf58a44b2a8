import Custody
import Foundation
import GRDB
import Logging
import ProcessSupport
import Synchronization
import TestSupport
import Testing
import VaultWire

#if canImport(FoundationNetworking)
import FoundationNetworking
#endif
#if canImport(Glibc)
import Glibc
#endif

/// A running `custos-server serve` child process on a loopback port (it dies with the tests).
final class ServerProcess: @unchecked Sendable {
  let child: ChildProcess
  /// `http://127.0.0.1:PORT`.
  let baseURL: String
  private let logs: TemporaryDirectory

  /// Starts the server on `database` against the device socket, and waits until it listens.
  /// `environment` adds variables (fault injection).
  init(database: String, socket: String, credential: String, environment: [String: String] = [:]) throws {
    logs = try TemporaryDirectory("custos-server-logs")
    var variables = ProcessInfo.processInfo.environment
    variables["CUSTOS_LOG_LEVEL"] = "info"
    for (key, value) in environment { variables[key] = value }
    child = ChildProcess(
      executable: builtExecutable("custos-server"),
      arguments: [
        "serve", "--port", "0", "--database", database, "--socket", socket, "--cu-credential", credential,
        "--poll-ms", "50",
      ], environment: variables, standardErrorPath: logs.appending("stderr"))
    baseURL = try child.startAndAwaitAnnouncement()
  }

  var standardError: String { child.standardError }

  /// Sends `signal` and waits for the exit (a minute at most, then SIGKILL).
  @discardableResult
  func stop(_ signal: Int32 = SIGTERM) -> Termination { child.signalAndAwaitExit(signal) }
}

/// An HTTP answer.
struct HTTPAnswer: CustomStringConvertible {
  let status: Int
  let body: Data

  /// The body as a JSON object.
  var json: [String: Any] { (try? JSONSerialization.jsonObject(with: body)) as? [String: Any] ?? [:] }
  /// The `code` of an `Error` body.
  var code: String? { json["code"] as? String }
  var text: String { String(decoding: body, as: UTF8.self) }
  var description: String { "\(status) \(text)" }
}

/// A client of the API over real HTTP (URLSession), recording every operation's answer so a
/// test can check them all against openapi.yaml at its end.
final class APIClient: @unchecked Sendable {
  let baseURL: String
  var key: String?
  private let session: URLSession
  private let recorded = Mutex<[String]>([])

  init(baseURL: String, key: String? = nil) {
    self.baseURL = baseURL
    self.key = key
    let configuration = URLSessionConfiguration.ephemeral
    configuration.timeoutIntervalForRequest = 60
    session = URLSession(configuration: configuration)
  }

  /// Sends a request; `operation` names the openapi.yaml operation it is (nil: do not record).
  @discardableResult
  func send(
    _ method: String, _ path: String, json: Any? = nil, raw: Data? = nil, contentType: String? = "application/json",
    key: String?? = .none, accept: String? = nil, operation: String?
  ) async throws -> HTTPAnswer {
    var request = URLRequest(url: URL(string: baseURL + path)!)
    request.httpMethod = method
    if let accept { request.setValue(accept, forHTTPHeaderField: "Accept") }
    if let json { request.httpBody = try JSONSerialization.data(withJSONObject: json, options: [.sortedKeys]) }
    if let raw { request.httpBody = raw }
    if request.httpBody != nil, let contentType { request.setValue(contentType, forHTTPHeaderField: "Content-Type") }
    let presented: String? =
      switch key {
      case .none: self.key
      case .some(let value): value
      }
    if let presented { request.setValue("Bearer \(presented)", forHTTPHeaderField: "Authorization") }
    let (data, response) = try await session.data(for: request)
    let answer = HTTPAnswer(status: (response as! HTTPURLResponse).statusCode, body: data)
    if let operation {
      let body = (try? JSONSerialization.jsonObject(with: data)) ?? NSNull()
      let line = try JSONSerialization.data(
        withJSONObject: ["operation": operation, "status": answer.status, "body": body], options: [.sortedKeys])
      recorded.withLock { $0.append(String(decoding: line, as: UTF8.self)) }
    }
    return answer
  }

  /// Checks every recorded answer against openapi.yaml (scripts/check-api-responses.py):
  /// documented status, body valid under the response's schema.
  func checkRecordedAnswers() throws {
    let lines = recorded.withLock { $0 }
    guard !lines.isEmpty else { return }
    let directory = try TemporaryDirectory("custos-api-answers")
    let file = directory.appending("answers.jsonl")
    try (lines.joined(separator: "\n") + "\n").write(toFile: file, atomically: true, encoding: .utf8)
    let result = try runProcess(
      "/usr/bin/env",
      ["python3", repositoryRoot + "/scripts/check-api-responses.py", repositoryRoot + "/openapi.yaml", file])
    #expect(result.status == 0, "answers that do not match openapi.yaml:\n\(result.output)\(result.error)")
    #expect(result.output.contains("\(lines.count) responses match openapi.yaml"))
  }
}

/// One device (a copy of the rehearsed one) served by custos-hsm and unsealed, a database, and
/// a custos-server on them, with an API key of every scope.
final class Stack: @unchecked Sendable {
  let rehearsed: RehearsedDevice
  let copy: DeviceCopy
  let directory: TemporaryDirectory
  var hsm: HSMProcess?
  var server: ServerProcess?
  let socket: String
  let database: String
  private(set) var key = ""
  private(set) var api: APIClient!

  init() async throws {
    rehearsed = try RehearsedDevice.get()
    copy = try rehearsed.copy()
    directory = try TemporaryDirectory("custos-stack")
    socket = socketPath(directory)
    database = directory.appending("server/custos.sqlite")
    try await startDevice()
    key = try Self.makeKey(database: database, scopes: ["all"])
    try startServer()
  }

  /// Starts custos-hsm on the copy and unseals it with two holders.
  func startDevice() async throws {
    let hsm = try HSMProcess(device: copy.device, socket: socket)
    self.hsm = hsm
    let client = try hsm.client()
    try await unseal(client, rehearsed)
    await client.close()
  }

  /// Starts custos-server (again) with `environment`.
  func startServer(environment: [String: String] = [:]) throws {
    let server = try ServerProcess(
      database: database, socket: socket, credential: rehearsed.credential, environment: environment)
    self.server = server
    api = APIClient(baseURL: server.baseURL, key: key)
  }

  /// `custos-server keys create`: the key it prints.
  static func makeKey(database: String, scopes: [String], name: String = "tests") throws -> String {
    let result = try runProcess(
      builtExecutable("custos-server"), ["keys", "create", "--database", database, "--name", name, "--scope"] + scopes)
    guard result.status == 0 else { throw TestSupportError("keys create failed: \(result.error)") }
    return result.output.trimmingCharacters(in: .whitespacesAndNewlines)
  }

  /// Waits (polling the API, at most `seconds`) until `condition` holds for the request.
  func waitForRequest(
    _ id: String, seconds: Double = 30, until condition: ([String: Any]) -> Bool
  ) async throws -> [String: Any] {
    let deadline = Date().addingTimeInterval(seconds)
    while true {
      let answer = try await api.send("GET", "/v1/requests/\(id)", operation: "getRequest")
      if answer.status == 200, condition(answer.json) { return answer.json }
      guard Date() < deadline else {
        throw TestSupportError(
          "request \(id) did not get there in \(seconds) s: \(answer)\n\(server?.standardError ?? "")")
      }
      try await Task.sleep(for: .milliseconds(50))
    }
  }

  /// Waits until the server says its tree agrees with the device.
  func waitForAgreement(seconds: Double = 30) async throws -> [String: Any] {
    let deadline = Date().addingTimeInterval(seconds)
    while true {
      let answer = try await api.send("GET", "/v1/device", operation: "getDeviceStatus")
      let tree = answer.json["tree"] as? [String: Any]
      if answer.json["state"] as? String == "READY", tree?["agreement"] as? String == "agreed" { return answer.json }
      guard Date() < deadline else {
        throw TestSupportError("the server did not agree with the device in \(seconds) s: \(answer)")
      }
      try await Task.sleep(for: .milliseconds(50))
    }
  }

  /// The device's committed root, read with a Crypto User session of the test's own.
  func deviceRoot() async throws -> RootState {
    let client = try VaultClient(endpoint: .unixSocket(path: socket), timeout: testCallTimeout)
    defer { Task { await client.close() } }
    let session = try await client.login(credential: try rehearsed.cryptoUserCredential())
    let root = try await client.rootState(session)
    try? await client.logout(session)
    return root
  }

  /// The database read directly (a reader beside the server's writer).
  func databaseSnapshot() throws -> DatabaseSnapshotValues {
    let queue = try DatabaseQueue(
      path: database,
      configuration: {
        var c = Configuration(); c.readonly = true; return c
      }())
    return try queue.read { db in
      let root = try Data.fetchOne(db, sql: "SELECT value FROM tree_nodes WHERE node = 1") ?? Data()
      return DatabaseSnapshotValues(
        root: Hash256(root) ?? .zero,
        leafCount: UInt64(try Int64.fetchOne(db, sql: "SELECT leaf_count FROM tree_state") ?? 0),
        wallets: try Int.fetchOne(db, sql: "SELECT count(*) FROM wallets WHERE status = 'active'") ?? 0,
        requests: try Int.fetchOne(db, sql: "SELECT count(*) FROM requests") ?? 0,
        approvals: try Int.fetchOne(db, sql: "SELECT count(*) FROM approvals") ?? 0,
        intents: try Int.fetchOne(db, sql: "SELECT count(*) FROM intents") ?? 0,
        pendingIntents: try Int.fetchOne(db, sql: "SELECT count(*) FROM intents WHERE state = 'pending'") ?? 0,
        sealedSeeds: try Int.fetchOne(db, sql: "SELECT count(*) FROM sealed_seeds") ?? 0)
    }
  }

  func stop() {
    server?.stop()
    hsm?.stop()
  }
}

/// Counts and the root of the server's database at one moment.
struct DatabaseSnapshotValues: Equatable, CustomStringConvertible {
  var root: Hash256
  var leafCount: UInt64
  var wallets: Int
  var requests: Int
  var approvals: Int
  var intents: Int
  var pendingIntents: Int
  var sealedSeeds: Int

  var description: String {
    "root \(root.hex), \(leafCount) leaves, \(wallets) wallets, \(requests) requests, \(approvals) approvals, \(intents) intents (\(pendingIntents) pending), \(sealedSeeds) sealed seeds"
  }
}

/// The approvers of the tests' wallets: two bots (P-256 and Ed25519) and one software passkey
/// (ES256), from fixed keys.
struct Approvers {
  let bot: SoftwareBot
  let edBot: SoftwareBot
  let passkey: SoftwareAuthenticator

  init(seed: String = "server tests") throws {
    func key(_ name: String) -> [UInt8] { Hash256.sha256(Array("\(seed) \(name)".utf8)).bytes }
    bot = try SoftwareBot(.p256, privateKey: key("bot"))
    edBot = try SoftwareBot(.ed25519, privateKey: key("ed bot"))
    passkey = try SoftwareAuthenticator(.es256, credentialID: key("passkey credential"), privateKey: key("passkey"))
  }

  /// The JSON of the three approvers for a wallet proposal.
  var proposal: [[String: Any]] {
    [
      [
        "id": "bot-a",
        "bot": ["algorithm": "p256", "publicKey": Base64URL.encode(bot.botKey.publicKey)],
      ],
      [
        "id": "bot-b",
        "bot": ["algorithm": "ed25519", "publicKey": Base64URL.encode(edBot.botKey.publicKey)],
      ],
      [
        "id": "carol",
        "passkey": [
          "credentialId": Base64URL.encode(passkey.credentialID), "publicKey": Base64URL.encode(passkey.coseKey),
          "rpId": passkey.rpID, "allowedOrigins": [passkey.origin],
        ],
      ],
    ]
  }

  /// The approval of `approver` for the envelope, as the JSON the approval route takes.
  func approval(_ approver: String, envelope: [UInt8]) -> [String: Any] {
    switch approver {
    case "bot-a": return ["approverId": "bot-a", "botSignature": Base64URL.encode(bot.signature(over: envelope))]
    case "bot-b": return ["approverId": "bot-b", "botSignature": Base64URL.encode(edBot.signature(over: envelope))]
    default:
      let assertion = passkey.assert(challenge: RequestEnvelope.challenge(of: envelope).bytes)
      return [
        "approverId": approver,
        "passkey": [
          "credentialId": Base64URL.encode(assertion.credentialID),
          "authenticatorData": Base64URL.encode(assertion.authenticatorData),
          "clientDataJSON": Base64URL.encode(assertion.clientDataJSON),
          "signature": Base64URL.encode(assertion.signature),
        ],
      ]
    }
  }
}

extension APIClient {
  /// The envelope of a request, from the approval route.
  func envelope(_ requestID: String) async throws -> [UInt8] {
    let answer = try await send("GET", "/v1/approvals/\(requestID)", key: .some(nil), operation: "getApprovalRequest")
    guard answer.status == 200, let text = answer.json["envelope"] as? String, let bytes = Base64URL.decode(text) else {
      throw TestSupportError("no envelope for \(requestID): \(answer)")
    }
    return bytes
  }

  /// Posts `approver`'s approval of a request (no API key: approvers have none).
  @discardableResult
  func approve(_ requestID: String, as approver: String, by approvers: Approvers) async throws -> HTTPAnswer {
    let envelope = try await envelope(requestID)
    return try await send(
      "POST", "/v1/approvals/\(requestID)", json: approvers.approval(approver, envelope: envelope), key: .some(nil),
      operation: "submitApproval")
  }

  /// Proposes the tests' 2-of-3 wallet and has all three approve it; the wallet's id.
  func createWallet(_ approvers: Approvers, threshold: Int = 2) async throws -> (walletID: Int, requestID: String) {
    let proposed = try await send(
      "POST", "/v1/wallets", json: ["threshold": threshold, "approvers": approvers.proposal],
      operation: "createWallet")
    guard proposed.status == 202, let id = proposed.json["id"] as? String else {
      throw TestSupportError("the wallet proposal was refused: \(proposed)")
    }
    var last: HTTPAnswer? = nil
    for approver in ["bot-a", "bot-b", "carol"] {
      last = try await approve(id, as: approver, by: approvers)
    }
    guard let receipt = last, receipt.json["status"] as? String == "completed",
      let result = receipt.json["result"] as? [String: Any], let walletID = result["walletId"] as? Int
    else { throw TestSupportError("the wallet was not created: \(String(describing: last))") }
    return (walletID, id)
  }

  /// A transfer request on `walletID`; the request's id.
  func transfer(
    _ walletID: Int, valueWei: String = "1000000000000000", nonce: Int = 0,
    to: String = "0x1111111111111111111111111111111111111111"
  ) async throws -> String {
    let answer = try await send(
      "POST", "/v1/wallets/\(walletID)/requests",
      json: [
        "transaction": [
          "chainId": 1, "nonce": nonce, "maxPriorityFeePerGasWei": "2000000000", "maxFeePerGasWei": "30000000000",
          "gasLimit": 21000, "to": to, "valueWei": valueWei,
        ]
      ], operation: "createSigningRequest")
    guard answer.status == 201, let id = answer.json["id"] as? String else {
      throw TestSupportError("the signing request was refused: \(answer)")
    }
    return id
  }
}
