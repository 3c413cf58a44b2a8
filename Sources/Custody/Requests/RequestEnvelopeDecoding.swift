// Decoding requests: read item by item with the wallet reader (the same field rules, and the
// same approver and policy decoders as wallet data), then validated with `validate()`.

extension RequestEnvelope {
  /// Decodes and validates a request encoding. Everything that is not a valid request in
  /// deterministic form is refused, with the field and the rule named; so
  /// `decode(b).encoded() == b` for every accepted `b`.
  public static func decode(_ bytes: [UInt8]) throws(RequestEnvelopeError) -> RequestEnvelope {
    let result = bytes.withUnsafeBytes { raw in
      Result { () throws(RequestEnvelopeError) -> RequestEnvelope in try decode(raw) }
    }
    return try result.get()
  }

  /// Decodes and validates the request encoding in `buffer`. A break of deterministic CBOR
  /// anywhere is reported as such, even where reading field by field stumbled on something
  /// else first.
  public static func decode(_ buffer: UnsafeRawBufferPointer) throws(RequestEnvelopeError) -> RequestEnvelope {
    let envelope: RequestEnvelope
    do {
      envelope = try WalletReader.read(buffer) { reader throws(WalletDataError) in try decodeFields(&reader) }
    } catch {
      throw RequestEnvelopeError(wrapping: error, under: nil)
    }
    try envelope.validate()
    return envelope
  }

  private static func decodeFields(_ reader: inout WalletReader) throws(WalletDataError) -> RequestEnvelope {
    var fields = try reader.object("request", domain: domain, version: currentVersion)
    let walletID = try reader.unsigned(0, "walletID", in: &fields)
    let hashBytes = try reader.bytes(1, "walletHash", in: &fields)
    guard let walletHash = Hash256(hashBytes) else {
      throw WalletDataError(.invalidValue, field: "walletHash", "a wallet hash has 32 bytes, not \(hashBytes.count)")
    }
    let operation = try reader.require(2, "operation", in: &fields) { reader, path throws(WalletDataError) in
      try Operation.decode(&reader, path)
    }
    let nonce = try reader.unsigned(3, "nonce", in: &fields)
    let expiry = try reader.unsigned(4, "expiry", in: &fields)
    let chain = try reader.optional(5, "chain", in: &fields) { reader, path throws(WalletDataError) in
      try ChainData.decode(&reader, path)
    }
    try reader.end(&fields)
    return RequestEnvelope(
      walletID: walletID, walletHash: walletHash, operation: operation, nonce: nonce, expiry: expiry, chain: chain)
  }
}

extension RequestEnvelope.Operation {
  /// `[name, parameters]`.
  static func decode(_ reader: inout WalletReader, _ path: FieldPath) throws(WalletDataError) -> Self {
    try reader.pair(path)
    let name = try reader.text(path)
    var fields = try reader.map(path)
    let operation: Self
    switch name {
    case "create-wallet":
      operation = .createWallet(
        WalletConfiguration(
          threshold: try reader.unsigned(0, "threshold", in: &fields),
          custodial: try reader.bool(1, "custodial", in: &fields),
          approvers: try reader.array(2, "approvers", in: &fields) { reader, path throws(WalletDataError) in
            try Approver.decode(&reader, path)
          },
          curve: try reader.either(
            3, "curve", in: &fields, WalletData.Curve.secp256k1.rawValue, WalletData.Curve.ed25519.rawValue)
            ? .secp256k1 : .ed25519,
          derivation: try reader.either(
            4, "derivation", in: &fields, WalletData.DerivationScheme.bip32.rawValue,
            WalletData.DerivationScheme.slip10.rawValue) ? .bip32 : .slip10,
          policy: try reader.require(5, "policy", in: &fields) { reader, path throws(WalletDataError) in
            try Policy.decode(&reader, path)
          }))
    case "update-wallet":
      operation = .updateWallet(
        WalletConfigurationChange(
          threshold: try reader.unsigned(0, "threshold", in: &fields),
          approvers: try reader.array(1, "approvers", in: &fields) { reader, path throws(WalletDataError) in
            try Approver.decode(&reader, path)
          },
          policy: try reader.require(2, "policy", in: &fields) { reader, path throws(WalletDataError) in
            try Policy.decode(&reader, path)
          }))
    case "remove-wallet":
      operation = .removeWallet
    case "sign-eip1559":
      operation = .signEIP1559(try EIP1559Transaction.decode(&reader, &fields))
    case "sign-personal-message":
      operation = .signPersonalMessage(try reader.bytes(0, "message", in: &fields))
    default:
      throw WalletDataError(
        .unknownOperation, field: path.text,
        "unknown operation '\(name)' (this version knows create-wallet, update-wallet, remove-wallet, sign-eip1559, sign-personal-message)"
      )
    }
    try reader.end(&fields)
    return operation
  }
}

extension EIP1559Transaction {
  static func decode(_ reader: inout WalletReader, _ fields: inout MapFields) throws(WalletDataError) -> Self {
    EIP1559Transaction(
      chainID: try reader.unsigned(0, "chainID", in: &fields),
      nonce: try reader.unsigned(1, "nonce", in: &fields),
      maxPriorityFeePerGas: try reader.require(2, "maxPriorityFeePerGas", in: &fields) {
        reader, path throws(WalletDataError) in try reader.amount(path)
      },
      maxFeePerGas: try reader.require(3, "maxFeePerGas", in: &fields) { reader, path throws(WalletDataError) in
        try reader.amount(path)
      },
      gasLimit: try reader.unsigned(4, "gasLimit", in: &fields),
      to: try reader.bytes(5, "to", in: &fields),
      value: try reader.require(6, "value", in: &fields) { reader, path throws(WalletDataError) in
        try reader.amount(path)
      },
      data: try reader.bytes(7, "data", in: &fields),
      accessList: try reader.array(8, "accessList", in: &fields) { reader, path throws(WalletDataError) in
        try reader.pair(path)
        let address = try reader.bytes(path["address"])
        let keys = try reader.array(path["storageKeys"]) { reader, path throws(WalletDataError) in
          try reader.bytes(path)
        }
        return AccessListEntry(address: address, storageKeys: keys)
      })
  }
}

extension ChainData {
  static func decode(_ reader: inout WalletReader, _ path: FieldPath) throws(WalletDataError) -> ChainData {
    var fields = try reader.map(path)
    let chain = try reader.text(0, "chain", in: &fields)
    let path = try reader.array(1, "path", in: &fields) { reader, path throws(WalletDataError) in
      let index = try reader.unsigned(path)
      guard index <= UInt64(UInt32.max) else {
        throw WalletDataError(.invalidValue, field: path.text, "a child index has 32 bits; \(index) does not fit")
      }
      return UInt32(index)
    }
    try reader.end(&fields)
    return ChainData(chain: chain, path: path)
  }
}
