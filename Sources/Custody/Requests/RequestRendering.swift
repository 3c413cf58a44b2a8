extension RequestEnvelope {
  /// The request in words, for the person asked to approve it: every field that the
  /// signature covers, with amounts in ether and wei, addresses with their EIP-55 checksum,
  /// the key path, and the expiry as a UTC date. The approver page and the bot tools show
  /// exactly this text; nothing else renders a request.
  public func rendered() -> String {
    var lines = ["Custos request, version \(version)"]
    func line(_ label: String, _ value: String, indent: Int = 0) {
      let padded = label + ":" + String(repeating: " ", count: max(1, 16 - label.count - indent))
      lines.append(String(repeating: " ", count: indent) + padded + value)
    }
    if case .createWallet = operation {
      line("Wallet", "a new wallet (the vault assigns its id)")
    } else {
      line("Wallet", "#\(walletID), as of wallet data \(walletHash.hex)")
    }
    switch operation {
    case .createWallet(let configuration):
      line("Operation", "create a wallet")
      line("Approvals", "\(configuration.threshold) of \(configuration.approvers.count) approvers", indent: 2)
      line(
        "Keys",
        "\(configuration.curve.rawValue), \(configuration.derivation.rawValue) derivation"
          + (configuration.custodial ? ", custodial" : ", non-custodial (2-party)"), indent: 2)
      lines += RequestEnvelope.renderApprovers(configuration.approvers)
      lines += RequestEnvelope.renderPolicy(configuration.policy)
    case .updateWallet(let change):
      line("Operation", "change the wallet's approvers, threshold and policy")
      line("Approvals", "\(change.threshold) of \(change.approvers.count) approvers", indent: 2)
      lines += RequestEnvelope.renderApprovers(change.approvers)
      lines += RequestEnvelope.renderPolicy(change.policy)
    case .removeWallet:
      line("Operation", "remove the wallet (its key can no longer sign)")
    case .signEIP1559(let transaction):
      line("Operation", "sign an EIP-1559 transaction")
      line("To", EthereumAddress.checksummed(transaction.to), indent: 2)
      line("Value", RequestEnvelope.ether(transaction.value), indent: 2)
      line("Chain id", "\(transaction.chainID)", indent: 2)
      line("Account nonce", "\(transaction.nonce)", indent: 2)
      line("Gas limit", "\(transaction.gasLimit)", indent: 2)
      line("Max fee", RequestEnvelope.gwei(transaction.maxFeePerGas) + " per gas", indent: 2)
      line("Max tip", RequestEnvelope.gwei(transaction.maxPriorityFeePerGas) + " per gas", indent: 2)
      line(
        "Data",
        transaction.data.isEmpty
          ? "none" : "\(transaction.data.count) bytes 0x\(Hex.encode(transaction.data))", indent: 2)
      if transaction.accessList.isEmpty {
        line("Access list", "none", indent: 2)
      } else {
        for entry in transaction.accessList {
          line(
            "Access list",
            EthereumAddress.checksummed(entry.address)
              + (entry.storageKeys.isEmpty
                ? "" : " slots " + entry.storageKeys.map { "0x" + Hex.encode($0) }.joined(separator: ", ")),
            indent: 2)
        }
      }
    case .signPersonalMessage(let message):
      line("Operation", "sign a personal message (EIP-191)")
      line("Message", RequestEnvelope.describeMessage(message), indent: 2)
    }
    if let chain {
      line("Chain", chain.chain)
      line("Signing key", chain.pathText)
    }
    line("Request nonce", "\(nonce)")
    line("Expires", RequestEnvelope.utcDate(expiry) + " (Unix \(expiry))")
    return lines.joined(separator: "\n")
  }

  static func renderApprovers(_ approvers: [Approver]) -> [String] {
    approvers.map { approver in
      switch approver.credential {
      case .passkey(let passkey):
        let algorithm = (try? passkey.coseKey().algorithm == .es256) == true ? "ES256" : "EdDSA"
        return "    approver \(approver.id): passkey \(algorithm) for \(passkey.rpID)"
          + " at \(passkey.allowedOrigins.joined(separator: ", "))"
          + (passkey.requireUserVerification ? ", user verification required" : "")
          + ", credential \(Hex.encode(passkey.credentialID.prefix(8)))"
      case .bot(let bot):
        return "    approver \(approver.id): bot \(bot.algorithm.rawValue) key \(Hex.encode(bot.publicKey))"
      }
    }
  }

  static func renderPolicy(_ policy: Policy) -> [String] {
    var lines = [String]()
    lines.append(
      "  Per transaction: " + (policy.perTransactionLimit.map { "at most " + ether($0) } ?? "no limit"))
    lines.append(
      "  Rolling window:  "
        + (policy.rollingWindow.map { "at most \(ether($0.limit)) in any \($0.seconds) seconds" } ?? "none"))
    lines.append(
      "  Destinations:    "
        + (policy.destinationAllowlist.isEmpty ? "any" : policy.destinationAllowlist.joined(separator: ", ")))
    lines.append(
      "  Hours (UTC):     "
        + (policy.timeOfDay.map {
          "from \(TimeOfDayWindow.clockText($0.fromMinute)) to \(TimeOfDayWindow.clockText($0.toMinute))"
        } ?? "any time"))
    return lines
  }

  /// `1.5 ETH (1500000000000000000 wei)`.
  static func ether(_ amount: Amount) -> String {
    decimal(amount, places: 18) + " ETH (\(amount) wei)"
  }

  /// `30 gwei (30000000000 wei)`.
  static func gwei(_ amount: Amount) -> String {
    decimal(amount, places: 9) + " gwei (\(amount) wei)"
  }

  /// `amount / 10^places` in decimal, without trailing zeros.
  static func decimal(_ amount: Amount, places: Int) -> String {
    let zero = UInt8(ascii: "0")
    var digits = Array(amount.description.utf8)
    if digits.count <= places { digits = [UInt8](repeating: zero, count: places + 1 - digits.count) + digits }
    var fraction = digits.suffix(places)
    while fraction.last == zero { fraction.removeLast() }
    let whole = String(decoding: digits.dropLast(places), as: UTF8.self)
    return fraction.isEmpty ? whole : whole + "." + String(decoding: fraction, as: UTF8.self)
  }

  /// Printable UTF-8 in quotes, anything else as hex.
  static func describeMessage(_ message: [UInt8]) -> String {
    let printable =
      message.withUnsafeBytes { CBORReader.isValidUTF8($0) }
      && !message.contains { $0 < 0x20 && $0 != 0x0A || $0 == 0x7F }
    return printable
      ? "\(message.count) bytes of text " + CBOR.quoted(String(decoding: message, as: UTF8.self))
      : "\(message.count) bytes 0x\(Hex.encode(message))"
  }

  /// `2025-01-01 12:00:00 UTC` (proleptic Gregorian, from the days since 1970-01-01).
  static func utcDate(_ seconds: UInt64) -> String {
    let date = CivilDate(daysSince1970: Int64(seconds / 86_400))
    let rest = Int(seconds % 86_400)
    func two(_ value: Int) -> String { value < 10 ? "0\(value)" : "\(value)" }
    return
      "\(date.year)-\(two(date.month))-\(two(date.day)) \(two(rest / 3600)):\(two(rest / 60 % 60)):\(two(rest % 60)) UTC"
  }
}
