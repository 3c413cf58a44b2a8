import ArgumentParser
import Custody
import Vault

/// `custos eth`: checks on Ethereum values a custody server returns.
struct EthCommand: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "eth", abstract: "Ethereum checks: who signed a raw transaction.",
    subcommands: [Sender.self])

  struct Sender: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
      abstract: "Recover the sender of a raw signed EIP-1559 transaction (0x02 || RLP) from its signature.")

    @Argument(help: "The raw signed transaction, 0x hex.")
    var transaction: String

    @Option(help: "Exit 1 unless the sender is this address.")
    var expect: String?

    func run() async throws {
      guard let raw = Hex.decode(transaction.hasPrefix("0x") ? String(transaction.dropFirst(2)) : transaction) else {
        throw ValidationError("the transaction is not hex")
      }
      let sender: [UInt8]
      do {
        sender = try EthereumSigning.sender(ofSignedTransaction: raw, secp: try Secp256k1())
      } catch {
        throw CommandFailure("cannot recover the sender: \(error)")
      }
      let address = EthereumAddress.checksummed(sender)
      print("sender: \(address)")
      if let expect {
        guard let expected = EthereumAddress.parse(expect) else {
          throw ValidationError("--expect is not an Ethereum address: \(expect)")
        }
        guard expected == sender else { throw CommandFailure("the sender is \(address), not \(expect)") }
        print("matches \(EthereumAddress.checksummed(expected))")
      }
    }
  }
}
