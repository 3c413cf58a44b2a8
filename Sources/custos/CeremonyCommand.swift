import ArgumentParser
import Ceremony
import Custody
import Foundation
import HSMBridge

struct CeremonyCommand: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "ceremony",
    abstract: "Run key ceremonies from their scripts, and verify their transcripts.",
    subcommands: [Run.self, Verify.self])

  struct Run: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
      abstract: "Run a ceremony script (Ceremonies/*.yaml) step by step.",
      discussion: """
        Each step is authorised by its quorum of officers, whose tokens sign the step's challenge \
        after their PIN; a real run prompts each person on the terminal without echo. With \
        --rehearsal, PINs and passwords come from the participants file and missing officer tokens \
        are created, so the whole ceremony runs unattended. The transcript is written under \
        DIR/transcripts/. A failed ceremony leaves no device behind.
        """)

    @Argument(help: "The ceremony script, e.g. Ceremonies/init-device.yaml.")
    var script: String

    @Option(help: "The device directory the ceremony creates (must not exist).")
    var device: String

    @Option(help: "The participants file (see Ceremonies/participants.example.yaml).")
    var participants: String

    @Flag(help: "Rehearse: PINs and passwords from the participants file, nobody prompted.")
    var rehearsal = false

    @Option(
      name: .customLong("rehearsal-dir"),
      help:
        "Where a rehearsal keeps officer tokens, share files and the credential (default: rehearsal/ beside the device)."
    )
    var rehearsalDirectory: String?

    @Option(help: "The device's name (default: the directory's name).")
    var name: String?

    @OptionGroup var logging: LoggingOptions

    func run() async throws {
      let logger = logging.makeLogger("custos.ceremony")
      let deviceDirectory = URL(fileURLWithPath: device).standardizedFileURL.path
      let base =
        rehearsal
        ? URL(
          fileURLWithPath: rehearsalDirectory
            ?? ((deviceDirectory as NSString).deletingLastPathComponent + "/rehearsal")
        ).standardizedFileURL.path
        : FileManager.default.currentDirectoryPath
      do {
        let script = try CeremonyScript.load(self.script)
        let people = try Participants.load(participants, baseDirectory: base)
        if rehearsal {
          try FileManager.default.createDirectory(
            atPath: base, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        }
        let prompter: CeremonyPrompter =
          rehearsal ? RehearsalPrompter(participants: people, output: { print($0) }) : TerminalPrompter()
        let outcome = try CeremonyEngine(
          script: script, participants: people, deviceDirectory: deviceDirectory, deviceName: name,
          rehearsal: rehearsal, prompter: prompter, logger: logger
        ).run()
        print("signed by \(outcome.signers.joined(separator: ", ")); chain head \(outcome.head)")
        print("record: \(outcome.record)")
      } catch let error as CeremonyError {
        throw CommandFailure("ceremony failed: \(error)")
      }
    }
  }

  struct Verify: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
      abstract: "Verify a ceremony transcript: its hash chain and every signature.",
      discussion: """
        Checks the hash of every line and that each carries the previous line's hash, every \
        signature against the public keys recorded in the transcript's first line, every step's \
        role and quorum, and that every officer who took part signed the completed ceremony. \
        Says which line broke.
        """)

    @Argument(help: "The transcript's .jsonl file (DIR/transcripts/*.jsonl).")
    var transcript: String

    func run() async throws {
      do {
        let summary = try TranscriptVerifier.verify(path: transcript)
        print(
          "transcript verifies: ceremony \(summary.ceremony), \(summary.lines) lines, \(summary.steps) steps, chain head \(summary.head)"
        )
        print("signed by \(summary.signers.joined(separator: ", ")) over \(summary.completedHead)")
      } catch let error as TranscriptError {
        throw CommandFailure("transcript \(transcript) does not verify: \(error)")
      }
    }
  }
}

struct OfficerTokenCommand: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "officer-token",
    abstract: "Officer tokens: the emulated USB token with a PIN pad each officer carries.",
    subcommands: [Create.self])

  struct Create: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
      abstract: "Create an officer token: a one-token device with a P-256 key generated inside it.",
      discussion: """
        The private key signs (after the PIN), is sensitive, private and never extractable. The PIN \
        is asked twice on the terminal without echo. The token's SO PIN is random and forgotten: a \
        token whose PIN is lost is replaced and its officer re-enrolled.
        """)

    @Argument(help: "The token's directory (must not exist).")
    var directory: String

    @Option(help: "The officer's name.")
    var name: String

    @OptionGroup var logging: LoggingOptions

    func run() async throws {
      let logger = logging.makeLogger("custos.officer-token")
      let pin = try TerminalInput.secret("\(name), choose your token PIN (4 or more characters)")
      let again = try TerminalInput.secret("\(name), the same PIN again")
      guard pin.constantTimeEquals(again) else { throw CommandFailure("the two PINs differ; nothing was created") }
      let token = try OfficerToken.create(at: directory, name: name, pin: pin, logger: logger)
      print("officer token of \(token.name) at \(token.device.directory)")
      print("  key ID     \(EnrolledOfficer.keyID(of: token.publicKey))")
      print("  public key \(Hex.encode(token.publicKey))")
    }
  }
}
