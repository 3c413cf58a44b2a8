import ArgumentParser
import Ceremony
import Custody
import Foundation
import HSMBridge
import Logging
import VaultWire

struct LockdownCommand: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "lockdown",
    abstract: "Verify attribute lockdown: the policy table, a catalogue of real PKCS #11 attacks, the file system.",
    subcommands: [Audit.self, List.self, Exec.self])

  /// The device and the unseal quorum that opens its partitions.
  struct Quorum: ParsableArguments {
    @Option(help: "The device directory.")
    var device: String?

    @Option(help: "The participants file: unseal key holders and their share files.")
    var participants: String?

    @Flag(help: "Take the holders' passwords from the participants file (rehearsals and CI).")
    var rehearsal = false

    @Option(
      name: .customLong("rehearsal-dir"),
      help: "With --rehearsal: the rehearsal directory (default: rehearsal/ beside the device).")
    var rehearsalDirectory: String?

    @Option(
      name: .customLong("holder"),
      help:
        "An unseal key holder who unseals (repeatable; default: the first of the file in a rehearsal, asked otherwise)."
    )
    var holders: [String] = []

    /// Opens (and locks) the device and activates it with the quorum's shares.
    func open(logger: Logger) throws -> (Device, DeviceActivation) {
      guard let deviceDirectory = self.device, let participants else {
        throw ValidationError("give the device directory (--device) and the participants file (--participants)")
      }
      let device = try Device.open(at: deviceDirectory, logger: logger)
      let base =
        rehearsal
        ? rehearsalBase(device: device.directory, rehearsalDirectory) : FileManager.default.currentDirectoryPath
      do {
        let people = try Participants.load(participants, baseDirectory: base)
        let threshold = try device.enrolment().activation?.threshold ?? 2
        let shares = try people.unsealShares(holders: holders, threshold: threshold, rehearsal: rehearsal)
        return (device, try device.activate(shares: shares))
      } catch let error as CeremonyError {
        throw CommandFailure("cannot unseal: \(error)")
      } catch let error as HSMBridgeError {
        throw CommandFailure("activation refused: \(error.reason)")
      }
    }
  }

  struct Audit: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
      abstract: "Audit a device's lockdown; exits non-zero when any expectation fails.",
      discussion: """
        With --device: unseals the device with a quorum, then checks every attribute of every \
        object of every partition against the attribute policy table (an unknown object fails) \
        and each partition's mechanisms against its allow-list; every attack of the catalogue \
        (custos lockdown list), run for real against every key it applies to, with the CKR code \
        observed; destructive attacks against a snapshot copy of the device, never the device; \
        permissions, and no key value or PIN in plaintext on disk.

        With --socket (the second layer, against a running custos-hsm): checks from outside, with \
        the Crypto User credential, that nothing but the vault API is reachable: methods and \
        services outside the contract are unknown, session calls without a session are refused, \
        calls while SEALED are refused, a wrong credential is refused and counted, and vault \
        calls without valid approvals are refused (PENDING while this build does not serve them).
        """)

    @OptionGroup var quorum: Quorum

    @OptionGroup var endpoint: DeviceEndpointOptions

    @Option(name: .customLong("cu-credential"), help: "With --socket: the file holding the Crypto User credential.")
    var cryptoUserCredential: String?

    @Option(help: "A JSON file of the tester's own attacks, run after the built-in ones.")
    var attacks: String?

    @Flag(help: "Print JSON instead of the table.")
    var json = false

    @OptionGroup var logging: LoggingOptions

    func validate() throws {
      if endpoint.given {
        guard quorum.device == nil, quorum.participants == nil, attacks == nil else {
          throw ValidationError("--socket audits a running device: --device, --participants and --attacks do not apply")
        }
        guard cryptoUserCredential != nil else {
          throw ValidationError("--socket needs the Crypto User credential: --cu-credential FILE")
        }
      } else if cryptoUserCredential != nil {
        throw ValidationError("--cu-credential goes with --socket")
      }
    }

    func run() async throws {
      if endpoint.given { return try await runOverTheWire() }
      let logger = logging.makeLogger("custos.lockdown")
      let catalogue = try loadCatalogue(attacks)
      let (device, activation) = try quorum.open(logger: logger)
      let report = try LockdownAudit(device: device, activation: activation, attacks: catalogue, logger: logger).run()
      print(json ? try report.json() : report.text)
      if !report.passed { throw ExitCode(1) }
    }

    private func runOverTheWire() async throws {
      let credential: SecretBytes
      do {
        credential = try VaultClient.readCredential(at: cryptoUserCredential!)
      } catch {
        throw CommandFailure(error.message)
      }
      let report = try await endpoint.withClient { client in
        try await wire { try await WireAudit.run(client: client, credential: credential) }
      }
      print(json ? try report.json() : report.text)
      if !report.passed { throw ExitCode(1) }
    }
  }

  struct List: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
      abstract: "List the catalogue of attacks: what each tries, why it must fail, what is expected.")

    @Option(help: "A JSON file of the tester's own attacks, listed after the built-in ones.")
    var attacks: String?

    @Flag(help: "Print JSON instead of text.")
    var json = false

    func run() async throws {
      let catalogue = try loadCatalogue(attacks)
      if json {
        try printJSON(catalogue.map(CatalogueEntry.init))
        return
      }
      for attack in catalogue {
        print("\(attack.id)  \(attack.title)\(attack.source == "built-in" ? "" : "  [\(attack.source)]")")
        print("    tries     \(attack.tries)")
        print("    why       \(attack.why)")
        print(
          "    runs      \(attack.operation), mechanism \(attack.mechanism), on \(attack.target)"
            + (attack.template == .none ? "" : ", attributes \(attack.template)")
            + (attack.isDestructive ? ", against a snapshot copy (destructive)" : ""))
        print("    expected  \(attack.expectation)")
      }
      print("\(catalogue.count) attacks")
    }
  }

  struct Exec: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
      abstract: "Run a tester's own tool against one partition of the unsealed device.",
      discussion: """
        The tool gets PKCS11_MODULE, SOFTHSM2_CONF, PKCS11_TOKEN_LABEL and PKCS11_PIN (the \
        partition's User PIN) in its own environment only; custos waits for it, keeps the device \
        locked meanwhile, and exits with the tool's status. Example:
          custos lockdown exec --device D --participants P --rehearsal -- \\
            sh -c 'pkcs11-tool --module "$PKCS11_MODULE" --token-label "$PKCS11_TOKEN_LABEL" \
        --login --pin env:PKCS11_PIN --list-objects'
        """)

    @OptionGroup var quorum: Quorum

    @Option(help: "The partition the tool works on.")
    var partition = "custody"

    @Argument(parsing: .postTerminator, help: "The command to run, after --.")
    var command: [String] = []

    @OptionGroup var logging: LoggingOptions

    func validate() throws {
      if command.isEmpty { throw ValidationError("give the command to run after --") }
    }

    func run() async throws {
      let logger = logging.makeLogger("custos.lockdown")
      let (device, activation) = try quorum.open(logger: logger)
      let status = try TesterTool.run(
        command, device: device, partition: partition, pins: try activation.pins(partition), logger: logger)
      withExtendedLifetime(device) {}
      if status != 0 { throw ExitCode(status) }
    }
  }
}

private func loadCatalogue(_ file: String?) throws -> [LockdownAttack] {
  guard let file else { return LockdownCatalogue.builtIn }
  return LockdownCatalogue.builtIn + (try LockdownCatalogue.load(file: file))
}

/// One attack as `custos lockdown list --json` shows it.
private struct CatalogueEntry: Encodable {
  var id: String
  var title: String
  var tries: String
  var why: String
  var operation: String
  var mechanism: String
  var attributes: String?
  var target: String
  var expected: String
  var destructive: Bool
  var source: String

  init(_ attack: LockdownAttack) {
    id = attack.id
    title = attack.title
    tries = attack.tries
    why = attack.why
    operation = attack.operation.rawValue
    mechanism = attack.mechanism.description
    attributes = attack.template == .none ? nil : attack.template.description
    target = attack.target.description
    expected = attack.expectation.description
    destructive = attack.isDestructive
    source = attack.source
  }
}
