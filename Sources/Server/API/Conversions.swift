import Custody
import CustosAPI
import Foundation

typealias Schemas = Components.Schemas

/// Reading the API's JSON values into Custody's types, with an `APIError` naming the field for
/// anything that does not parse. The rules of wallet data and envelopes themselves stay in
/// Custody (checked when the envelope is encoded).
enum Read {
  static func bytes(_ text: String, _ field: String) throws(APIError) -> [UInt8] {
    guard let bytes = Base64URL.decode(text) else {
      throw APIError(.invalidValue, "not base64url (RFC 4648 section 5, no padding)", field: field)
    }
    return bytes
  }

  static func wei(_ text: String, _ field: String) throws(APIError) -> Amount {
    guard let amount = Amount(decimal: text), text == "0" || !text.hasPrefix("0") else {
      throw APIError(.invalidValue, "an amount of wei in decimal digits below 2^256, not '\(text)'", field: field)
    }
    return amount
  }

  static func address(_ text: String, _ field: String) throws(APIError) -> [UInt8] {
    guard let address = EthereumAddress.parse(text) else {
      throw APIError(
        .invalidValue, "not an Ethereum address (0x and 40 hex digits, with a correct EIP-55 checksum if mixed case)",
        field: field)
    }
    return address
  }

  static func hex(_ text: String, _ field: String, length: Int? = nil) throws(APIError) -> [UInt8] {
    guard text.hasPrefix("0x"), let bytes = Hex.decode(text.dropFirst(2)), length.map({ bytes.count == $0 }) ?? true
    else {
      throw APIError(
        .invalidValue, "0x and " + (length.map { "\($0 * 2) hex digits" } ?? "an even number of hex digits"),
        field: field)
    }
    return bytes
  }

  static func unsigned(
    _ value: Int64, _ field: String, in range: ClosedRange<Int64> = 0...Int64.max
  ) throws(APIError)
    -> UInt64
  {
    guard range.contains(value) else {
      throw APIError(.invalidValue, "\(value) is outside \(range.lowerBound) ... \(range.upperBound)", field: field)
    }
    return UInt64(value)
  }

  static func expiry(_ value: Int?) throws(APIError) -> UInt64? {
    guard let value else { return nil }
    guard (30...604_800).contains(value) else {
      throw APIError(.invalidValue, "between 30 seconds and 7 days (604800)", field: "expiresInSeconds")
    }
    return UInt64(value)
  }

  /// A BIP-32 path as `m/44'/60'/0'/0/0` (or with `h`) into child indices.
  static func path(_ text: String?, _ field: String = "path") throws(APIError) -> [UInt32]? {
    guard let text else { return nil }
    var parts = text.split(separator: "/", omittingEmptySubsequences: false)
    guard parts.first == "m", text.utf8.count <= 256 else {
      throw APIError(.invalidValue, "a BIP-32 path starts with m/ (m/44'/60'/0'/0/0)", field: field)
    }
    parts.removeFirst()
    var indices = [UInt32]()
    for part in parts {
      var digits = Substring(part)
      var hardened: UInt32 = 0
      if let last = digits.last, last == "'" || last == "h" {
        hardened = ChainData.hardened
        digits = digits.dropLast()
      }
      guard !digits.isEmpty, digits.allSatisfy(\.isASCII), digits.allSatisfy(\.isNumber),
        digits == "0" || !digits.hasPrefix("0"), let index = UInt32(digits), index < ChainData.hardened
      else {
        throw APIError(.invalidValue, "'\(part)' is not a child index (0 to 2^31-1, ' or h for hardened)", field: field)
      }
      indices.append(index | hardened)
    }
    return indices
  }

  static func approvers(_ inputs: [Schemas.ApproverInput]) throws(APIError) -> [Approver] {
    var approvers = [Approver]()
    for (index, input) in inputs.enumerated() {
      let field = "approvers[\(index)]"
      switch (input.passkey, input.bot) {
      case (let passkey?, nil):
        let signCount = try unsigned(passkey.signCount ?? 0, field + ".passkey.signCount", in: 0...Int64(UInt32.max))
        approvers.append(
          Approver(
            id: input.id,
            credential: .passkey(
              Passkey(
                credentialID: try bytes(passkey.credentialId, field + ".passkey.credentialId"),
                publicKey: try bytes(passkey.publicKey, field + ".passkey.publicKey"), rpID: passkey.rpId,
                allowedOrigins: Array(Set(passkey.allowedOrigins)).sorted {
                  $0.utf8.lexicographicallyPrecedes($1.utf8)
                },
                signCount: UInt32(signCount), requireUserVerification: passkey.requireUserVerification ?? true))))
      case (nil, let bot?):
        approvers.append(
          Approver(
            id: input.id,
            credential: .bot(
              BotKey(
                algorithm: bot.algorithm == .p256 ? .p256 : .ed25519,
                publicKey: try bytes(bot.publicKey, field + ".bot.publicKey")))))
      default:
        throw APIError(.invalidValue, "an approver has exactly one of passkey and bot", field: field)
      }
    }
    // Wallet data keeps approvers sorted by id; the order given does not matter.
    return approvers.sorted { $0.id.utf8.lexicographicallyPrecedes($1.id.utf8) }
  }

  static func policy(_ input: Schemas.Policy?) throws(APIError) -> Policy {
    guard let input else { return Policy() }
    var allowlist = [String]()
    for (index, text) in (input.destinationAllowlist ?? []).enumerated() {
      // Stored in the checksummed form the renderer shows; the vault compares the bytes.
      allowlist.append(EthereumAddress.checksummed(try address(text, "policy.destinationAllowlist[\(index)]")))
    }
    var window: TimeOfDayWindow? = nil
    if let time = input.timeOfDay {
      guard (0..<1440).contains(time.fromMinute), (0..<1440).contains(time.toMinute) else {
        throw APIError(.invalidValue, "minutes of the day are 0 to 1439", field: "policy.timeOfDay")
      }
      window = TimeOfDayWindow(fromMinute: UInt16(time.fromMinute), toMinute: UInt16(time.toMinute))
    }
    var rolling: RollingLimit? = nil
    if let rollingWindow = input.rollingWindow {
      rolling = RollingLimit(
        seconds: try unsigned(rollingWindow.seconds, "policy.rollingWindow.seconds", in: 1...Int64.max),
        limit: try wei(rollingWindow.limitWei, "policy.rollingWindow.limitWei"))
    }
    return Policy(
      perTransactionLimit: try input.perTransactionLimitWei.map { (text) throws(APIError) in
        try wei(text, "policy.perTransactionLimitWei")
      }, rollingWindow: rolling,
      destinationAllowlist: Array(Set(allowlist)).sorted { $0.utf8.lexicographicallyPrecedes($1.utf8) },
      timeOfDay: window)
  }

  static func threshold(_ value: Int) throws(APIError) -> UInt64 {
    guard (1...32).contains(value) else {
      throw APIError(.invalidValue, "a threshold is 1 to 32", field: "threshold")
    }
    return UInt64(value)
  }

  static func operation(_ input: Schemas.SigningRequestInput) throws(APIError) -> RequestEnvelope.Operation {
    switch (input.transaction, input.personalMessage) {
    case (let transaction?, nil):
      var accessList = [EIP1559Transaction.AccessListEntry]()
      for (index, entry) in (transaction.accessList ?? []).enumerated() {
        let field = "transaction.accessList[\(index)]"
        var keys = [[UInt8]]()
        for (keyIndex, key) in (entry.storageKeys ?? []).enumerated() {
          keys.append(try hex(key, field + ".storageKeys[\(keyIndex)]", length: 32))
        }
        accessList.append(
          EIP1559Transaction.AccessListEntry(address: try address(entry.address, field + ".address"), storageKeys: keys)
        )
      }
      return .signEIP1559(
        EIP1559Transaction(
          chainID: try unsigned(transaction.chainId, "transaction.chainId", in: 1...Int64.max),
          nonce: try unsigned(transaction.nonce, "transaction.nonce"),
          maxPriorityFeePerGas: try wei(transaction.maxPriorityFeePerGasWei, "transaction.maxPriorityFeePerGasWei"),
          maxFeePerGas: try wei(transaction.maxFeePerGasWei, "transaction.maxFeePerGasWei"),
          gasLimit: try unsigned(transaction.gasLimit, "transaction.gasLimit"),
          to: try address(transaction.to, "transaction.to"),
          value: try wei(transaction.valueWei, "transaction.valueWei"),
          data: try transaction.data.map { (text) throws(APIError) in try hex(text, "transaction.data") } ?? [],
          accessList: accessList))
    case (nil, let message?):
      switch (message.text, message.hex) {
      case (let text?, nil): return .signPersonalMessage(Array(text.utf8))
      case (nil, let hexText?): return .signPersonalMessage(try hex(hexText, "personalMessage.hex"))
      default:
        throw APIError(.invalidValue, "a personal message has exactly one of text and hex", field: "personalMessage")
      }
    default:
      throw APIError(.invalidValue, "a signing request has exactly one of transaction and personalMessage")
    }
  }

  static func approval(_ input: Schemas.ApprovalSubmission) throws(APIError) -> Approval {
    if let encoded = input.encoded {
      guard input.approverId == nil, input.passkey == nil, input.botSignature == nil else {
        throw APIError(
          .invalidValue, "give either encoded, or approverId with passkey or botSignature", field: "encoded")
      }
      do {
        return try Approval.decode(try bytes(encoded, "encoded"))
      } catch let error as APIError {
        throw error
      } catch {
        throw APIError(.invalidValue, "not a canonical approval: \(error)", field: "encoded")
      }
    }
    guard let approverID = input.approverId else {
      throw APIError(.missingField, "an approval names its approver", field: "approverId")
    }
    let proof: Approval.Proof
    switch (input.passkey, input.botSignature) {
    case (let passkey?, nil):
      proof = .passkey(
        PasskeyAssertion(
          credentialID: try bytes(passkey.credentialId, "passkey.credentialId"),
          authenticatorData: try bytes(passkey.authenticatorData, "passkey.authenticatorData"),
          clientDataJSON: try bytes(passkey.clientDataJSON, "passkey.clientDataJSON"),
          signature: try bytes(passkey.signature, "passkey.signature")))
    case (nil, let signature?):
      proof = .bot(signature: try bytes(signature, "botSignature"))
    default:
      throw APIError(.invalidValue, "an approval has exactly one of passkey and botSignature", field: "passkey")
    }
    let approval = Approval(approverID: approverID, proof: proof)
    do {
      try approval.validate()
    } catch {
      throw APIError(.invalidValue, error.reason, field: error.field.replacingOccurrences(of: "approval.", with: ""))
    }
    return approval
  }
}

/// Custody's values as the API shows them.
enum Show {
  static func request(_ request: StoredRequest) -> Schemas.Request {
    let approved = Set(request.approvals.map(\.approverID))
    return Schemas.Request(
      id: request.id, kind: Schemas.Request.KindPayload(rawValue: request.kind.rawValue) ?? .signEip1559,
      walletId: request.walletID.map { Int64($0) }, status: status(request.status), threshold: request.threshold,
      approvals: request.approvals.map { .init(approverId: $0.approverID, at: $0.receivedAt) },
      awaiting: request.status == .awaitingApprovals ? request.approverIDs.filter { !approved.contains($0) } : [],
      nonce: Int64(request.nonce), createdAt: request.createdAt, expiresAt: request.expiresAt,
      completedAt: request.completedAt, envelopeHash: request.envelopeHash.hex,
      approvalPath: "/v1/approvals/\(request.id)", result: result(request), failure: failure(request))
  }

  static func status(_ status: RequestStatus) -> Schemas.RequestStatus {
    Schemas.RequestStatus(rawValue: status.rawValue) ?? .refused
  }

  static func result(_ request: StoredRequest) -> Schemas.RequestResult? {
    guard request.status == .completed else { return nil }
    var result = Schemas.RequestResult(
      walletId: request.walletID.map { Int64($0) }, deviceEpoch: request.resultEpoch.map { Int64($0) })
    if let output = request.output {
      switch request.kind {
      case .signEIP1559:
        result.signedTransaction = "0x" + Hex.encode(output)
        result.transactionHash = "0x" + Hex.encode(Keccak256.hash(output))
      case .signPersonalMessage:
        result.signature = "0x" + Hex.encode(output)
      default:
        break
      }
    }
    return result
  }

  static func failure(_ request: StoredRequest) -> Schemas._Error? {
    request.failure.map { Schemas._Error(code: $0.code, message: $0.message, vaultCode: $0.vaultCode) }
  }

  static func policy(_ policy: Policy) -> Schemas.Policy {
    Schemas.Policy(
      perTransactionLimitWei: policy.perTransactionLimit.map(\.description),
      rollingWindow: policy.rollingWindow.map { .init(seconds: Int64($0.seconds), limitWei: $0.limit.description) },
      destinationAllowlist: policy.destinationAllowlist,
      timeOfDay: policy.timeOfDay.map { .init(fromMinute: Int($0.fromMinute), toMinute: Int($0.toMinute)) })
  }

  static func approver(_ approver: Approver) -> Schemas.Approver {
    switch approver.credential {
    case .passkey(let passkey):
      let algorithm: Schemas.Approver.PasskeyPayload.AlgorithmPayload =
        (try? passkey.coseKey().algorithm) == .edDSA ? .edDSA : .es256
      return Schemas.Approver(
        id: approver.id, kind: .passkey,
        passkey: .init(
          credentialId: Base64URL.encode(passkey.credentialID), algorithm: algorithm,
          publicKey: Base64URL.encode(passkey.publicKey), rpId: passkey.rpID, allowedOrigins: passkey.allowedOrigins,
          signCount: Int64(passkey.signCount), requireUserVerification: passkey.requireUserVerification))
    case .bot(let bot):
      return Schemas.Approver(
        id: approver.id, kind: .bot,
        bot: .init(algorithm: bot.algorithm == .p256 ? .p256 : .ed25519, publicKey: Base64URL.encode(bot.publicKey)))
    }
  }

  static func rootState(_ state: RootState) -> Schemas.RootState {
    Schemas.RootState(epoch: Int64(state.epoch), leafCount: Int64(state.leafCount), root: state.root.hex)
  }
}
