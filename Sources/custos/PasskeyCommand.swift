import Approver
import ArgumentParser
import Custody
import Foundation

/// `custos passkey`: a software passkey (the same `SoftwareAuthenticator` the tests use) driven
/// from the command line, for the demo and for trying the approval routes without a browser.
struct PasskeyCommand: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "passkey",
    abstract: "A software passkey: create one, approve requests with real WebAuthn assertions.",
    subcommands: [Create.self, Approve.self])

  struct Create: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
      abstract: "Make a software passkey's key file (0600) and print its enrolment.",
      discussion: """
        The file (format custos-approver-key, kind passkey) holds the private key, the credential \
        id, the RP id and origin its assertions carry, and the signature counter, which each \
        approval raises and writes back before the approval leaves.
        """)

    @Option(help: "es256 or eddsa.")
    var algorithm: String = "es256"

    @Option(help: "The key file to write (refused if it exists).")
    var out: String

    @Option(name: .customLong("rp-id"), help: "The relying party id (the approval page's domain).")
    var rpID: String = "custody.example"

    @Option(help: "The origin the client data names (the approval page's origin).")
    var origin: String = "https://custody.example"

    @Option(help: "The approver id the wallet enrols this passkey under (stored in the file).")
    var id: String?

    func run() async throws {
      let chosen: SoftwareAuthenticator.Algorithm
      switch algorithm {
      case "es256": chosen = .es256
      case "eddsa": chosen = .edDSA
      default: throw ValidationError("--algorithm is es256 or eddsa, not \(algorithm)")
      }
      let key = try approverCall { () throws(ApproverError) in
        try ApproverKey.createPasskey(chosen, rpID: rpID, origin: origin, approverID: id, at: out)
      }
      guard case .passkey(let authenticator) = key.signer else { return }
      print("wrote \(out) (0600): passkey \(algorithm) for \(rpID) at \(origin)")
      print("credential id: \(Base64URL.encode(authenticator.credentialID))")
      print("enrol as: \(key.enrolmentJSON(id: id ?? "passkey"))")
    }
  }

  struct Approve: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
      abstract: "Approve one request with the software passkey (a WebAuthn assertion over its challenge).",
      discussion: """
        Fetches, decodes and checks the envelope as custos approve does, shows it, then makes an \
        assertion whose challenge is SHA-256 of the envelope, with the passkey's RP id and origin, \
        UP and UV set and the next signature counter, and posts it.
        """)

    @OptionGroup var target: ApprovalTargetOptions

    @Argument(help: "The request id (rq_ and 32 hex digits).")
    var requestID: String

    @OptionGroup var logging: LoggingOptions

    func run() async throws {
      try await target.approveOne(requestID, requireBot: false, logger: logging.makeLogger("custos.passkey"))
    }
  }
}
