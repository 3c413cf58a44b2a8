import Custody

/// The Bitcoin network an address is for (its human-readable part).
public enum BitcoinNetwork: String, Sendable, Hashable, CaseIterable {
  case mainnet, testnet, regtest

  /// The bech32 human-readable part.
  public var humanReadablePart: String {
    switch self {
    case .mainnet: "bc"
    case .testnet: "tb"
    case .regtest: "bcrt"
    }
  }
}

/// Addresses users of each chain expect, from public keys the vault derived.
public enum ChainAddress {
  /// An Ethereum address with the EIP-55 mixed-case checksum: the last 20 bytes of Keccak-256
  /// of the uncompressed public key without its 0x04 prefix.
  public static func ethereum(publicKey: [UInt8], secp: Secp256k1) throws -> String {
    eip55(try EthereumSigning.address(ofPublicKey: publicKey, secp: secp))
  }

  /// The EIP-55 text (0x + 40 mixed-case hex digits) of a 20-byte address.
  public static func eip55(_ address: [UInt8]) -> String {
    EthereumAddress.checksummed(address)
  }

  /// Whether `text` is a 20-byte hex address whose letters carry a correct EIP-55 checksum
  /// (all-lower and all-upper addresses carry none and are accepted, as EIP-55 says).
  public static func isValidEthereum(_ text: String) -> Bool {
    EthereumAddress.parse(text) != nil
  }

  /// A P2WPKH address: witness version 0 with HASH160 of the compressed public key (Bech32).
  public static func bitcoinP2WPKH(publicKey: [UInt8], network: BitcoinNetwork, secp: Secp256k1) throws -> String {
    let compressed = try secp.compressed(publicKey)
    return try SegwitAddress(
      humanReadablePart: network.humanReadablePart, version: 0, program: Hashes.hash160(compressed)
    ).text
  }

  /// A P2TR address for key-path spending with no script tree (BIP-86): witness version 1 with
  /// the output key Q = P + hash_TapTweak(P)*G (Bech32m).
  public static func bitcoinP2TR(publicKey: [UInt8], network: BitcoinNetwork, secp: Secp256k1) throws -> String {
    let internalKey = Array(try secp.compressed(publicKey).dropFirst())
    let outputKey = try secp.taprootOutputKey(internalKey: internalKey)
    return try SegwitAddress(humanReadablePart: network.humanReadablePart, version: 1, program: outputKey).text
  }

  /// A Solana address: the Base58 text of the 32-byte Ed25519 public key.
  public static func solana(publicKey: [UInt8]) throws -> String {
    guard publicKey.count == 32 else {
      throw VaultError(.invalidKey, "a Solana address is an Ed25519 key of 32 bytes, not \(publicKey.count)")
    }
    return Base58.encode(publicKey)
  }
}
