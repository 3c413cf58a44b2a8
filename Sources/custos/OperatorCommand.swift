import ArgumentParser
import Ceremony
import Custody
import Foundation
import HSMBridge
import VaultWire

/// Where a running device listens, as the commands that talk to one take it.
struct DeviceEndpointOptions: ParsableArguments {
  @Option(help: "The device's Unix socket (custos-hsm --socket).")
  var socket: String?

  @Option(help: "A device listening on TCP with TLS: HOST:PORT (custos-hsm --listen).")
  var connect: String?

  @Option(name: .customLong("tls-ca"), help: "With --connect: the PEM certificates the device's must chain to.")
  var tlsCA: String?

  @Option(name: .customLong("tls-server-name"), help: "With --connect: the name the device's certificate carries.")
  var tlsServerName: String?

  /// Whether an endpoint was given at all.
  var given: Bool { socket != nil || connect != nil }

  func endpoint() throws -> DeviceEndpoint {
    switch (socket, connect) {
    case (let socket?, nil):
      return .unixSocket(path: URL(fileURLWithPath: socket).standardizedFileURL.path)
    case (nil, let connect?):
      guard let tlsCA else { throw ValidationError("--connect needs --tls-ca (the device is reached over TLS only)") }
      guard let colon = connect.lastIndex(of: ":"), let port = Int(connect[connect.index(after: colon)...]) else {
        throw ValidationError("--connect takes HOST:PORT, not \(connect)")
      }
      let host = String(connect[..<colon]).trimmingCharacters(in: CharacterSet(charactersIn: "[]"))
      return .tls(host: host, port: port, trustRoots: tlsCA, serverName: tlsServerName)
    case (nil, nil): throw ValidationError("give the device's --socket PATH (or --connect HOST:PORT --tls-ca FILE)")
    case (.some, .some): throw ValidationError("give either --socket or --connect, not both")
    }
  }

  /// Runs `body` with a client connected to the device, and closes it after.
  func withClient<T>(_ body: (VaultClient) async throws -> T) async throws -> T {
    let client: VaultClient
    do {
      client = try VaultClient(endpoint: try endpoint())
    } catch let error as VaultWireError {
      throw CommandFailure("cannot reach the device: \(error.message)")
    }
    do {
      let result = try await body(client)
      await client.close()
      return result
    } catch {
      await client.close()
      throw error
    }
  }
}

struct OperatorCommand: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "operator",
    abstract: "Unseal a running device (custos-hsm) and show its status.",
    subcommands: [Unseal.self, Status.self])

  struct Unseal: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
      abstract: "Submit unseal key holders' shares to a running device until it is READY.",
      discussion: """
        Each holder gives their share file and types its password (no echo); the device reports \
        its progress (k of the threshold) after each, as HashiCorp Vault does, and opens the vault \
        once the quorum is met. A wrong password counts against the device's lockout (5 failures, \
        then 1 minute doubling to 1 hour, kept across restarts).

        Without --share the command asks for the share file's path. --rehearsal takes the \
        holders' share files and passwords from a participants file (rehearsals and CI only).
        """)

    @OptionGroup var endpoint: DeviceEndpointOptions

    @Option(name: .customLong("share"), help: "A holder's share file (repeatable); its password is asked.")
    var shares: [String] = []

    @Option(help: "A participants file: the holders' share files (and, with --rehearsal, passwords).")
    var participants: String?

    @Flag(help: "Take the holders' passwords from the participants file (rehearsals and CI).")
    var rehearsal = false

    @Option(
      name: .customLong("rehearsal-dir"), help: "With --participants: the directory its relative paths resolve against."
    )
    var rehearsalDirectory: String?

    @Option(
      name: .customLong("holder"),
      help: "With --participants: a holder who unseals (repeatable; default: the first of the file in a rehearsal).")
    var holders: [String] = []

    @Flag(help: "Discard the shares the device has accepted so far before submitting.")
    var reset = false

    @OptionGroup var logging: LoggingOptions

    func validate() throws {
      if rehearsal && participants == nil {
        throw ValidationError("--rehearsal takes its passwords from --participants")
      }
      if participants != nil && !shares.isEmpty { throw ValidationError("give either --share or --participants") }
      if participants == nil && (!holders.isEmpty || rehearsalDirectory != nil) {
        throw ValidationError("--holder and --rehearsal-dir go with --participants")
      }
    }

    func run() async throws {
      try await endpoint.withClient { client in try await unseal(client) }
    }

    private func unseal(_ client: VaultClient) async throws {
      let status = try await wire { try await client.status() }
      print("device \(status.name) (serial \(status.serial)): \(status.state)")
      guard status.state == .sealed else {
        if status.state == .ready { print("already unsealed: nothing to do") }
        return
      }
      var submissions = try self.submissions(threshold: status.unseal.threshold)
      if reset {
        let (_, progress) = try await wire {
          try await client.unseal(shareFile: [], password: SecretBytes([]), reset: true)
        }
        print("unseal progress reset: \(progress.progress) of \(progress.threshold)")
      }
      var index = 0
      while true {
        let share: UnsealShare
        if index < submissions.count {
          share = submissions[index]
        } else if shares.isEmpty && participants == nil {
          let path = try TerminalInput.line("Unseal key holder, the path of your share file (empty to stop)")
          if path.isEmpty { break }
          share = UnsealShare(path: path, password: try TerminalInput.secret("The password of \(path)"))
          submissions.append(share)
        } else {
          break
        }
        index += 1
        guard let bytes = FileManager.default.contents(atPath: share.path) else {
          throw CommandFailure("cannot read the share file \(share.path)")
        }
        let (state, progress) = try await wire {
          try await client.unseal(shareFile: Array(bytes), password: share.password)
        }
        if state == .ready {
          print("unseal progress: quorum met; the device is READY")
          return
        }
        print(
          "unseal progress: \(progress.progress) of \(progress.threshold) (accepted: \(progress.holders.joined(separator: ", ")))"
        )
      }
      let final = try await wire { try await client.status() }
      print(
        "the device is still \(final.state): \(final.unseal.progress) of \(final.unseal.threshold) shares accepted")
      if final.state != .ready { throw ExitCode(2) }
    }

    /// The shares to submit: from --share (passwords asked), or the participants file.
    private func submissions(threshold: Int) throws -> [UnsealShare] {
      if let participants {
        let base =
          rehearsalDirectory.map { URL(fileURLWithPath: $0).standardizedFileURL.path }
          ?? FileManager.default.currentDirectoryPath
        do {
          let people = try Participants.load(participants, baseDirectory: base)
          return try people.unsealShares(holders: holders, threshold: threshold, rehearsal: rehearsal)
        } catch let error as CeremonyError {
          throw CommandFailure("cannot unseal: \(error)")
        }
      }
      return try shares.map { path in
        UnsealShare(path: path, password: try TerminalInput.secret("The password of the share file \(path)"))
      }
    }
  }

  struct Status: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
      abstract: "A running device's state: sealed or ready, unseal progress, lockouts, root state, measurement.")

    @OptionGroup var endpoint: DeviceEndpointOptions

    @Flag(help: "Print JSON instead of text.")
    var json = false

    func run() async throws {
      let status = try await endpoint.withClient { client in try await wire { try await client.operatorStatus() } }
      if json {
        try printJSON(StatusReport(status))
        return
      }
      print("device        \(status.name) (serial \(status.serial))")
      print("state         \(status.state)")
      print(
        "unseal        \(status.unseal.progress) of \(status.unseal.threshold) shares (\(status.unseal.shares) made)"
          + (status.unseal.holders.isEmpty ? "" : "; accepted: \(status.unseal.holders.joined(separator: ", "))"))
      print("unseal lock   \(describe(status.unseal.lockout))")
      print("login lock    \(describe(status.loginLockout))")
      if let root = status.root {
        print("root          epoch \(root.epoch), \(root.leafCount) leaves, \(root.root.hex)")
      }
      print("measurement   sha256 \(Hex.encode(status.measurement))")
    }

    private func describe(_ lockout: Lockout) -> String {
      if let until = lockout.lockedUntil {
        let seconds = Int(until.timeIntervalSinceNow.rounded(.up))
        return "LOCKED after \(lockout.failures) failures, for \(seconds) s more"
      }
      return lockout.failures == 0
        ? "none" : "\(lockout.failures) failures; \(lockout.attemptsBeforeLockout) more start a lockout"
    }
  }
}

/// `custos operator status --json`.
struct StatusReport: Encodable {
  struct LockoutReport: Encodable {
    var failures: Int
    var attemptsBeforeLockout: Int
    var lockedUntil: String?
    init(_ lockout: Lockout) {
      failures = lockout.failures
      attemptsBeforeLockout = lockout.attemptsBeforeLockout
      lockedUntil = lockout.lockedUntil.map { ISO8601DateFormatter().string(from: $0) }
    }
  }
  struct RootReport: Encodable {
    var epoch: UInt64
    var leafCount: UInt64
    var root: String
  }
  var name: String
  var serial: String
  var state: String
  var unsealThreshold: Int
  var unsealShares: Int
  var unsealProgress: Int
  var unsealHolders: [String]
  var unsealLockout: LockoutReport
  var loginLockout: LockoutReport
  var root: RootReport?
  var measurement: String

  init(_ status: DeviceStatus) {
    name = status.name
    serial = status.serial
    state = status.state.rawValue
    unsealThreshold = status.unseal.threshold
    unsealShares = status.unseal.shares
    unsealProgress = status.unseal.progress
    unsealHolders = status.unseal.holders
    unsealLockout = LockoutReport(status.unseal.lockout)
    loginLockout = LockoutReport(status.loginLockout)
    root = status.root.map { RootReport(epoch: $0.epoch, leafCount: $0.leafCount, root: $0.root.hex) }
    measurement = Hex.encode(status.measurement)
  }
}

/// Runs a device call; a refusal becomes a one-line failure naming it.
func wire<T>(_ body: () async throws -> T) async throws -> T {
  do {
    return try await body()
  } catch let error as VaultWireError {
    throw CommandFailure("the device refused: \(error.message) [\(error.code)]")
  }
}
