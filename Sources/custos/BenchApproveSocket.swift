import Custody
import Foundation
import Vault
import VaultWire

#if canImport(Glibc)
import Glibc
#endif

/// The process at the other end of a Unix socket (found with `SO_PEERCRED`), and what
/// `/proc` says about its memory and CPU time.
struct PeerProcess {
  let pid: pid_t

  /// The process `pid` (a child this command started).
  init(pid: pid_t) {
    self.pid = pid
  }

  /// Connects to the socket at `path` and asks the kernel who accepted.
  init(socket path: String) throws {
    let descriptor = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
    guard descriptor >= 0 else {
      throw CommandFailure("cannot make a Unix socket: \(String(cString: strerror(errno)))")
    }
    defer { close(descriptor) }
    var address = sockaddr_un()
    address.sun_family = sa_family_t(AF_UNIX)
    let capacity = MemoryLayout.size(ofValue: address.sun_path)
    guard path.utf8.count < capacity else { throw CommandFailure("the socket path \(path) is too long") }
    withUnsafeMutableBytes(of: &address.sun_path) { buffer in
      for (index, byte) in path.utf8.enumerated() { buffer[index] = byte }
    }
    let connected = withUnsafePointer(to: &address) {
      $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
        connect(descriptor, $0, socklen_t(MemoryLayout<sockaddr_un>.size))
      }
    }
    guard connected == 0 else {
      throw CommandFailure(
        "cannot connect to \(path) to find the device's process: \(String(cString: strerror(errno)))")
    }
    // struct ucred {pid_t pid; uid_t uid; gid_t gid;} (Glibc hides it behind _GNU_SOURCE).
    var credentials = [Int32](repeating: 0, count: 3)
    var length = socklen_t(MemoryLayout<Int32>.size * 3)
    let answered = credentials.withUnsafeMutableBytes {
      getsockopt(descriptor, SOL_SOCKET, SO_PEERCRED, $0.baseAddress, &length)
    }
    guard answered == 0, length == socklen_t(MemoryLayout<Int32>.size * 3), credentials[0] > 0 else {
      throw CommandFailure("SO_PEERCRED on \(path) failed: \(String(cString: strerror(errno)))")
    }
    pid = credentials[0]
  }

  /// Resident and peak resident memory (VmRSS, VmHWM of /proc/PID/status), in bytes.
  func memory() throws -> (resident: Int, peak: Int) {
    guard let status = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8) else {
      throw CommandFailure("cannot read /proc/\(pid)/status (has the device stopped?)")
    }
    func kilobytes(_ field: String) throws -> Int {
      guard let line = status.split(separator: "\n").first(where: { $0.hasPrefix(field + ":") }),
        let value = line.split(separator: " ", omittingEmptySubsequences: true).dropFirst().first.flatMap({ Int($0) })
      else { throw CommandFailure("/proc/\(pid)/status has no \(field)") }
      return value
    }
    return (try kilobytes("VmRSS") * 1024, try kilobytes("VmHWM") * 1024)
  }

  /// Resets the process's peak resident memory (VmHWM) to its current VmRSS (writing 5 to
  /// /proc/PID/clear_refs, Linux 4.0 and later; the process must be this user's). False when
  /// the kernel refused.
  func resetPeak() -> Bool {
    let descriptor = open("/proc/\(pid)/clear_refs", O_WRONLY | O_CLOEXEC)
    guard descriptor >= 0 else { return false }
    defer { close(descriptor) }
    return write(descriptor, "5", 1) == 1
  }

  /// User and system CPU seconds the process has used (fields 14 and 15 of /proc/PID/stat).
  func cpuSeconds() -> Double {
    guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
      let close = stat.lastIndex(of: ")")
    else { return 0 }
    // After "pid (comm)" the fields start at number 3 (state).
    let fields = stat[stat.index(after: close)...].split(separator: " ")
    guard fields.count > 12, let user = Double(fields[11]), let system = Double(fields[12]) else { return 0 }
    return (user + system) / Double(sysconf(Int32(_SC_CLK_TCK)))
  }
}

/// The device's memory at one point of the run.
struct DeviceMemory: Codable {
  /// Wallets the run had created by then.
  var wallets: Int
  /// Seconds since the creation began (nil before it).
  var seconds: Double?
  /// VmRSS and VmHWM, bytes.
  var residentBytes: Int
  var peakBytes: Int
}

/// `custos bench approve --socket`: the workload against a running device, through `clients`
/// connections, each with its own Crypto User session.
struct SocketBench {
  let socket: String
  let credentialFile: String
  let clients: Int
  let concurrency: Int
  /// How the clients send their session calls.
  var sessionCalls: VaultClient.SessionCalls = .pipelined

  /// What the socket run found.
  struct Report: Codable {
    var device: String
    var pid: Int32
    var clients: Int
    /// The workload's report (nil in a creation-only run).
    var workload: ApproveWorkloadReport?
    /// The creation of a creation-only run.
    var creation: ApproveWorkloadReport.Creation?
    /// Whether the device's VmHWM was reset after the first sample of a creation-only run (so
    /// the later samples' peaks are the creation's own, not the unseal's Argon2id).
    var peakReset: Bool?
    var durableRootMatches: Bool
    var memory: [DeviceMemory]
    /// How the session calls travelled (`pipelined` or `unary`).
    var sessionCalls: String
    /// The wire's own cost (not in a creation-only run).
    var wire: WireBound?
    /// The same measured with session calls sent the other way, for comparison.
    var otherWire: WireBound?
  }

  /// The device, logged in on every connection.
  struct Connection {
    let device: String
    let peer: PeerProcess
    let vaults: [RemoteVault]

    /// Logs out and closes every connection.
    func close() async {
      for vault in vaults {
        try? await vault.client.logout(vault.session)
        await vault.client.close()
      }
    }
  }

  /// Connects `clients` clients, logs each in, and checks that the device is READY and holds no
  /// wallet yet (the run mirrors its tree from the start).
  func connect() async throws -> Connection {
    var connected = [VaultClient]()
    do {
      for _ in 0..<clients {
        connected.append(try VaultClient(endpoint: .unixSocket(path: socket), sessionCalls: sessionCalls))
      }
      let status = try await connected[0].status()
      guard status.state == .ready else {
        throw CommandFailure(
          "the device at \(socket) is \(status.state): unseal it first (custos operator unseal --socket \(socket))")
      }
      if let root = status.root, root.leafCount != 1 {
        throw CommandFailure(
          "the device at \(socket) already holds \(root.leafCount - 1) wallets; the socket run mirrors the device's "
            + "tree from its first wallet, so it needs a device with none (a fresh init-device rehearsal)")
      }
      let credential = try VaultClient.readCredential(at: credentialFile)
      var vaults = [RemoteVault]()
      for client in connected {
        vaults.append(RemoteVault(client: client, session: try await client.login(credential: credential)))
      }
      return Connection(
        device: "\(status.name) (serial \(status.serial))", peer: try PeerProcess(socket: socket), vaults: vaults)
    } catch let error as VaultWireError {
      for client in connected { await client.close() }
      throw CommandFailure("the device at \(socket): \(error)")
    } catch {
      for client in connected { await client.close() }
      throw error
    }
  }

  /// The wire's own cost, measured with the cheapest session call (`GetRootState`: a session
  /// check and a root read, no vault work): one call at a time on one connection, then
  /// `concurrency` callers over every connection for `seconds`, with both processes' CPU.
  struct WireBound: Codable {
    /// `pipelined` or `unary`.
    var sessionCalls: String
    var sequential: ApproveWorkloadReport.Latency
    var callsPerSecond: Double
    var deviceMicrosecondsPerCall: Double
    var clientMicrosecondsPerCall: Double
  }

  func wireBound(_ connection: Connection, seconds: Double) async throws -> WireBound {
    try await wireBound(connection.vaults, peer: connection.peer, seconds: seconds)
  }

  /// The wire bound with session calls sent the other way than the run's: new connections,
  /// the same sessions.
  func otherWireBound(_ connection: Connection, seconds: Double) async throws -> WireBound {
    let other: VaultClient.SessionCalls = sessionCalls == .pipelined ? .unary : .pipelined
    var vaults = [RemoteVault]()
    do {
      for vault in connection.vaults {
        vaults.append(
          RemoteVault(
            client: try VaultClient(endpoint: .unixSocket(path: socket), sessionCalls: other), session: vault.session))
      }
      let bound = try await wireBound(vaults, peer: connection.peer, seconds: seconds)
      // Closed before the workload starts, so their streams and connections do not run beside it.
      for vault in vaults { await vault.client.close() }
      return bound
    } catch {
      for vault in vaults { await vault.client.close() }
      throw error
    }
  }

  private func wireBound(_ vaults: [RemoteVault], peer: PeerProcess, seconds: Double) async throws -> WireBound {
    let first = vaults[0]
    var latencies = [Duration]()
    for _ in 0..<500 {
      let start = ContinuousClock.now
      _ = try await first.durableRoot()
      latencies.append(ContinuousClock.now - start)
    }
    let deadline = ContinuousClock.now + .milliseconds(Int(seconds * 1000))
    let start = ContinuousClock.now
    let (deviceStart, clientStart) = (peer.cpuSeconds(), processCPUSeconds())
    let calls = try await withThrowingTaskGroup(of: Int.self) { group in
      for task in 0..<concurrency {
        let vault = vaults[task % vaults.count]
        group.addTask {
          var count = 0
          while ContinuousClock.now < deadline {
            _ = try await vault.durableRoot()
            count += 1
          }
          return count
        }
      }
      return try await group.reduce(0, +)
    }
    let elapsed = ContinuousClock.now - start
    let wall = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
    return WireBound(
      sessionCalls: first.client.sessionCalls.rawValue,
      sequential: ApproveWorkloadReport.Latency(latencies), callsPerSecond: Double(calls) / wall,
      deviceMicrosecondsPerCall: (peer.cpuSeconds() - deviceStart) * 1e6 / Double(calls),
      clientMicrosecondsPerCall: (processCPUSeconds() - clientStart) * 1e6 / Double(calls))
  }

  /// The socket run, measured in turns with the in-process one: `prepare` (the wire's bounds,
  /// the wallets, the device's memory before and after them), then one `round` after each
  /// in-process round, then `finish` (memory after the rounds, the durable root, the report).
  final class Run {
    let bench: SocketBench
    let connection: Connection
    let workload: ApproveWorkload<RemoteVault>
    private var memory = [DeviceMemory]()
    private var wire: WireBound?
    private var otherWire: WireBound?
    private var creation: ApproveWorkloadReport.Creation?
    private var rounds = [ApproveWorkloadReport.Round]()

    init(_ bench: SocketBench, _ connection: Connection) throws {
      self.bench = bench
      self.connection = connection
      workload = try ApproveWorkload(targets: connection.vaults, concurrency: bench.concurrency)
    }

    func prepare(wallets: Int, boundSeconds: Double) async throws {
      let peer = connection.peer
      memory.append(try bench.sample(peer, wallets: 0, seconds: nil))
      wire = try await bench.wireBound(connection, seconds: boundSeconds)
      otherWire = try await bench.otherWireBound(connection, seconds: boundSeconds)
      creation = try await workload.createWallets(wallets)
      memory.append(try bench.sample(peer, wallets: wallets, seconds: nil))
    }

    func round(_ index: Int) async throws {
      let peer = connection.peer
      rounds.append(try await workload.signRound(index, deviceCPUSeconds: { peer.cpuSeconds() }))
    }

    func finish() async throws -> Report {
      guard let creation else { throw CommandFailure("the socket run was not prepared") }
      memory.append(try bench.sample(connection.peer, wallets: creation.wallets, seconds: nil))
      let report = try await workload.report(target: "socket", creation: creation, rounds: rounds)
      await connection.close()
      return Report(
        device: connection.device, pid: connection.peer.pid, clients: bench.clients, workload: report,
        creation: nil, peakReset: nil, durableRootMatches: report.durableRootMatches, memory: memory,
        sessionCalls: bench.sessionCalls.rawValue, wire: wire, otherWire: otherWire)
    }
  }

  /// Creates `wallets` wallets from `concurrency` tasks (batched by the device's group commit) and samples the
  /// device's memory every `checkpoint` wallets; `progress` sees each sample as it is taken.
  func createOnly(
    _ connection: Connection, wallets: Int, checkpoint: Int, progress: (DeviceMemory) -> Void
  ) async throws -> Report {
    let (device, peer, vaults) = (connection.device, connection.peer, connection.vaults)
    do {
      var memory = [try sample(peer, wallets: 0, seconds: nil)]
      progress(memory[0])
      let reset = peer.resetPeak()
      let workload = try ApproveWorkload(targets: vaults, concurrency: concurrency, signing: false)
      let creation = try await workload.createWallets(wallets, checkpointEvery: checkpoint) { created, seconds in
        let taken = try sample(peer, wallets: created, seconds: seconds)
        memory.append(taken)
        progress(taken)
      }
      let matches = try await workload.durableRootMatches()
      await connection.close()
      return Report(
        device: device, pid: peer.pid, clients: clients, workload: nil, creation: creation, peakReset: reset,
        durableRootMatches: matches, memory: memory, sessionCalls: sessionCalls.rawValue, wire: nil,
        otherWire: nil)
    } catch {
      await connection.close()
      throw error
    }
  }

  func sample(_ peer: PeerProcess, wallets: Int, seconds: Double?) throws -> DeviceMemory {
    let (resident, peak) = try peer.memory()
    return DeviceMemory(wallets: wallets, seconds: seconds, residentBytes: resident, peakBytes: peak)
  }
}
