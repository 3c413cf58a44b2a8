import Custody
import Foundation
import TestSupport
import Testing
import VaultWire

/// Every bad input of the issue against the real server: a clear 4xx/5xx with a
/// machine-readable code, and nothing written to the database.
@Suite(.serialized) struct ServerBadInputTests {
  @Test func badInputIsRefusedAndChangesNothing() async throws {
    let stack = try await Stack()
    defer { stack.stop() }
    let api = stack.api!
    let approvers = try Approvers(seed: "bad input")
    _ = try await stack.waitForAgreement()
    let (walletID, _) = try await api.createWallet(approvers)
    let requestID = try await api.transfer(walletID)
    let otherID = try await api.transfer(walletID, nonce: 7)
    let before = try stack.databaseSnapshot()

    func expectRefused(
      _ answer: HTTPAnswer, _ status: Int, _ code: String, field: String? = nil,
      sourceLocation: SourceLocation = #_sourceLocation
    ) throws {
      #expect(answer.status == status, "\(answer)", sourceLocation: sourceLocation)
      #expect(answer.code == code, "\(answer)", sourceLocation: sourceLocation)
      #expect(!(answer.json["message"] as? String ?? "").isEmpty, sourceLocation: sourceLocation)
      if let field { #expect(answer.json["field"] as? String == field, "\(answer)", sourceLocation: sourceLocation) }
      #expect(try stack.databaseSnapshot() == before, "something was written", sourceLocation: sourceLocation)
    }

    let transfer: [String: Any] = [
      "chainId": 1, "nonce": 0, "maxPriorityFeePerGasWei": "1", "maxFeePerGasWei": "2", "gasLimit": 21000,
      "to": "0x1111111111111111111111111111111111111111", "valueWei": "1",
    ]
    let path = "/v1/wallets/\(walletID)/requests"

    // Malformed JSON, unknown fields (top level and nested), wrong types, missing fields.
    try expectRefused(
      try await api.send("POST", path, raw: Data("{\"transaction\": {".utf8), operation: "createSigningRequest"), 400,
      "malformedJSON")
    try expectRefused(
      try await api.send("POST", path, json: ["transaction": transfer, "extra": 1], operation: "createSigningRequest"),
      400, "unknownField", field: "extra")
    // One field of the transaction changed: (field, value, code, the field the error names).
    let mutations: [(String, Any?, String, String)] = [
      ("gasPrice", "1", "unknownField", "transaction.gasPrice"),
      ("gasLimit", "21000", "wrongType", "transaction.gasLimit"),
      ("to", nil, "missingField", "transaction.to"),
      ("to", "0x11111111111111111111111111111111111111", "invalidValue", "transaction.to"),
      ("maxPriorityFeePerGasWei", "3", "invalidValue", "maxPriorityFeePerGas"),
      ("valueWei", "-1", "invalidValue", "transaction.valueWei"),
    ]
    for (field, value, code, named) in mutations {
      var changed = transfer
      changed[field] = value
      try expectRefused(
        try await api.send("POST", path, json: ["transaction": changed], operation: "createSigningRequest"), 400, code,
        field: named)
    }
    try expectRefused(
      try await api.send(
        "POST", "/v1/wallets", json: ["threshold": 4, "approvers": approvers.proposal], operation: "createWallet"),
      400, "invalidValue", field: "threshold")
    try expectRefused(
      try await api.send(
        "POST", path, raw: Data("not json".utf8), contentType: "text/plain", operation: "createSigningRequest"),
      400, "unsupportedMediaType")

    // An Accept header that allows no JSON answer is refused and says so; JSON, any type, or a
    // list that includes JSON are answered.
    try expectRefused(
      try await api.send(
        "POST", path, json: ["transaction": transfer], accept: "text/html", operation: "createSigningRequest"),
      400, "notAcceptable")
    try expectRefused(
      try await api.send("GET", "/v1/approvals/\(requestID)", accept: "text/html", operation: "getApprovalRequest"),
      400, "notAcceptable")
    for accept in ["application/json", "*/*", "text/html, application/json;q=0.9", "application/*"] {
      let answer = try await api.send(
        "GET", "/v1/approvals/\(requestID)", accept: accept, operation: "getApprovalRequest")
      #expect(answer.status == 200, "Accept: \(accept): \(answer)")
      #expect(answer.json["envelope"] is String, "Accept: \(accept): \(answer)")
    }

    // A wallet id that is not a number, on every route that takes one.
    try expectRefused(try await api.send("GET", "/v1/wallets/abc", operation: "getWallet"), 400, "wrongType")
    try expectRefused(try await api.send("DELETE", "/v1/wallets/abc", operation: "removeWallet"), 400, "wrongType")

    // Oversized bodies: refused before they are read whole.
    let huge = ["personalMessage": ["text": String(repeating: "a", count: 70_000)]]
    try expectRefused(
      try await api.send("POST", path, json: huge, operation: "createSigningRequest"), 413, "bodyTooLarge")

    // Unknown wallet, unknown request, unknown route.
    try expectRefused(
      try await api.send(
        "POST", "/v1/wallets/999/requests", json: ["transaction": transfer], operation: "createSigningRequest"),
      404, "walletNotFound")
    try expectRefused(try await api.send("GET", "/v1/wallets/999", operation: "getWallet"), 404, "walletNotFound")
    try expectRefused(
      try await api.send("GET", "/v1/requests/rq_" + String(repeating: "0", count: 32), operation: "getRequest"), 404,
      "requestNotFound")
    try expectRefused(try await api.send("GET", "/v1/nothing", operation: nil), 404, "notFound")

    // Authentication and scopes.
    try expectRefused(
      try await api.send("GET", "/v1/wallets", key: .some(nil), operation: "listWallets"), 401, "unauthorized")
    try expectRefused(
      try await api.send("GET", "/v1/wallets", key: .some("custos-ak1-forged"), operation: "listWallets"), 401,
      "unauthorized")
    let reader = try Stack.makeKey(database: stack.database, scopes: ["wallets:read"], name: "reader")
    try expectRefused(
      try await api.send(
        "POST", path, json: ["transaction": transfer], key: .some(reader), operation: "createSigningRequest"),
      403, "forbidden")
    #expect(try await api.send("GET", "/v1/wallets", key: .some(reader), operation: "listWallets").status == 200)

    // An approval for another request: signed over request A's envelope, posted to B.
    let envelopeA = try await api.envelope(requestID)
    try expectRefused(
      try await api.send(
        "POST", "/v1/approvals/\(otherID)", json: approvers.approval("bot-a", envelope: envelopeA), key: .some(nil),
        operation: "submitApproval"), 422, "approvalRefused")
    // Someone who is not an approver, an approval with both kinds of proof, garbage encodings.
    var stranger = approvers.approval("bot-a", envelope: try await api.envelope(requestID))
    stranger["approverId"] = "mallory"
    try expectRefused(
      try await api.send(
        "POST", "/v1/approvals/\(requestID)", json: stranger, key: .some(nil), operation: "submitApproval"),
      422, "approvalRefused", field: "approverId")
    var both = approvers.approval("carol", envelope: envelopeA)
    both["botSignature"] = "AAAA"
    try expectRefused(
      try await api.send(
        "POST", "/v1/approvals/\(requestID)", json: both, key: .some(nil), operation: "submitApproval"),
      400, "invalidValue")
    try expectRefused(
      try await api.send(
        "POST", "/v1/approvals/\(requestID)", json: ["encoded": "!!!"], key: .some(nil), operation: "submitApproval"),
      400, "invalidValue", field: "encoded")

    // Approving twice: the second is refused (the first was stored, so compare after it).
    _ = try await api.approve(requestID, as: "bot-a", by: approvers)
    let afterOne = try stack.databaseSnapshot()
    let twice = try await api.approve(requestID, as: "bot-a", by: approvers)
    #expect(twice.status == 409 && twice.code == "alreadyApproved", "\(twice)")
    #expect(try stack.databaseSnapshot() == afterOne)

    // A request after the device sealed: custos-hsm restarts SEALED; new requests are refused
    // with 503 and nothing is written.
    stack.hsm?.stop()
    stack.hsm = try HSMProcess(device: stack.copy.device, socket: stack.socket)
    let deadline = Date().addingTimeInterval(30)
    while true {
      let device = try await api.send("GET", "/v1/device", operation: "getDeviceStatus")
      if device.json["state"] as? String == "SEALED" { break }
      guard Date() < deadline else { throw TestSupportError("the server never saw the device SEALED: \(device)") }
      try await Task.sleep(for: .milliseconds(50))
    }
    let sealedBefore = try stack.databaseSnapshot()
    let sealed = try await api.send("POST", path, json: ["transaction": transfer], operation: "createSigningRequest")
    #expect(sealed.status == 503 && sealed.code == "deviceSealed", "\(sealed)")
    let sealedAddress = try await api.send("GET", "/v1/wallets/\(walletID)/addresses", operation: "getWalletAddresses")
    #expect(sealedAddress.status == 503 && sealedAddress.code == "deviceSealed", "\(sealedAddress)")
    #expect(try stack.databaseSnapshot() == sealedBefore)
    try api.checkRecordedAnswers()
  }
}
