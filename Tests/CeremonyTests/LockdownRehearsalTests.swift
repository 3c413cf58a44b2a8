import Ceremony
import Custody
import Foundation
import HSMBridge
import TestSupport
import Testing

#if canImport(Glibc)
import Glibc
#endif

extension RehearsalTests {
  /// The lockdown audit and `lockdown exec` on the device of the shared init-device rehearsal.
  /// Nested in the serialized `RehearsalTests`, so no two tests hold that device at once.
  @Suite struct Lockdown {
    /// The shared rehearsal's device, open, and activated by the first two holders of the
    /// participants file (as `--rehearsal` with no `--holder` does).
    private func activated() throws -> (SharedRehearsal, Device, DeviceActivation) {
      let shared = try SharedRehearsal.get()
      let device = try Device.open(at: shared.outcome.device, logger: testLogger)
      let shares = try shared.rehearsal.participants().unsealShares(holders: [], threshold: 2, rehearsal: true)
      let activation = try device.activate(shares: shares)
      #expect(activation.holders == ["frank", "grace"])
      return (shared, device, activation)
    }

    @Test func theAuditPassesOnADeviceFreshFromTheRehearsal() throws {
      let (shared, device, activation) = try activated()
      // Object files of both partitions (SoftHSM rewrites token.object at each login).
      let objects = {
        try snapshot(device.directory + "/partitions").filter {
          $0.key.hasSuffix(".object") && !$0.key.hasSuffix("/token.object")
        }
      }
      let before = try objects()
      let report = try LockdownAudit(device: device, activation: activation, logger: testLogger).run()
      #expect(report.failures.map(\.name) == [])
      #expect(report.passed)
      #expect(report.serial == shared.outcome.serial)
      // The policy layer covered every object of the table: three custody keys, the root state's
      // slots, two admin pairs.
      #expect(
        Set(report.checks.filter { $0.check == "policy" }.map { "\($0.partition!)/\($0.subject)" }) == [
          "custody/custos.root (CKO_DATA)", "custody/custos.master (CKO_SECRET_KEY)",
          "custody/custos.sync (CKO_SECRET_KEY)",
          "custody/custos.audit (CKO_SECRET_KEY)", "admin/custos.codesign (CKO_PRIVATE_KEY)",
          "admin/custos.codesign (CKO_PUBLIC_KEY)", "admin/custos.attest (CKO_PRIVATE_KEY)",
          "admin/custos.attest (CKO_PUBLIC_KEY)",
        ])
      #expect(
        Set(report.checks.filter { $0.layer == .attack }.map(\.check)) == Set(LockdownCatalogue.builtIn.map(\.id)))
      // The documented holes on the real device: derivation from the three custody keys, and
      // the trusted-key import with both PINs (on the snapshot) for master and sync.
      #expect(
        report.checks.filter { $0.check == "derive.extractable" }.map(\.subject).sorted() == [
          "custos.audit (CKO_SECRET_KEY)", "custos.master (CKO_SECRET_KEY)", "custos.sync (CKO_SECRET_KEY)",
        ])
      let imported = report.checks.filter { $0.check == "trusted-import" }
      #expect(imported.map(\.subject).sorted() == ["custos.master (CKO_SECRET_KEY)", "custos.sync (CKO_SECRET_KEY)"])
      #expect(imported.allSatisfy { $0.onSnapshot && $0.observed.contains("gave it in clear (32 bytes)") })
      // No destructive attack touched the device: its objects are byte for byte the same.
      #expect(try objects() == before)
      #expect(report.text.contains("\(report.checks.count) checks: \(report.checks.count) passed, 0 failed"))
    }

    @Test func lockdownExecRunsPkcs11ToolAndAPythonScriptThatSeeTheAttributesTheAuditReports() throws {
      let shared = try SharedRehearsal.get()
      // What the audit's policy layer reads of each custody object; the device is let go
      // before custos opens it.
      let everything: [AuditedObject] = try {
        let (_, device, activation) = try activated()
        let session = try device.partition("custody").openSession(readWrite: false)
        try session.login(.user, pin: try activation.pins("custody").user)
        defer { try? session.close() }
        return try AttributePolicy.audit(partition: "custody", session: session).objects
      }()
      // The three keys, and the vault's two root-state slots (data objects).
      #expect(everything.count == 5)
      let audited = everything.filter { $0.objectClass == .secretKey }
      #expect(audited.count == 3)
      let custos = try #require(custosExecutable(), "the custos executable is built beside the tests")
      let exec = [
        "lockdown", "exec", "--device", shared.outcome.device, "--participants", shared.rehearsal.participantsPath,
        "--rehearsal", "--",
      ]

      // OpenSC's pkcs11-tool, with the PIN from the variable (never on its command line).
      let tool = try runProcess(
        custos,
        exec + [
          "sh", "-c",
          #"pkcs11-tool --module "$PKCS11_MODULE" --token-label "$PKCS11_TOKEN_LABEL" --login --pin env:PKCS11_PIN --list-objects"#,
        ])
      #expect(tool.status == 0, "\(tool.error)")
      let listing = tool.output
      var blocks = [String: [String: String]]()
      var current: [String: String]? = nil
      for line in listing.split(separator: "\n").map(String.init) {
        if !line.hasPrefix(" ") {
          if let current, let label = current["label"] { blocks[label] = current }
          current = ["kind": line]
        } else if let colon = line.firstIndex(of: ":") {
          current?[line[..<colon].trimmingCharacters(in: .whitespaces)] =
            line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces)
        }
      }
      if let current, let label = current["label"] { blocks[label] = current }
      #expect(blocks.values.filter { $0["kind"]?.hasPrefix("Data object") == true }.count == 2)
      blocks = blocks.filter { $0.value["kind"]?.hasPrefix("Secret Key Object") == true }
      #expect(Set(blocks.keys) == ["custos.master", "custos.sync", "custos.audit"])
      for object in audited {
        let block = try #require(blocks[object.label ?? ""])
        #expect(block["kind"] == "Secret Key Object; AES length 32")
        func on(_ type: AttributeType) -> Bool { object.readings[type]?.attribute?.boolValue == true }
        let usages: [(AttributeType, String)] = [
          (.encrypt, "encrypt"), (.decrypt, "decrypt"), (.sign, "sign"), (.verify, "verify"), (.wrap, "wrap"),
          (.unwrap, "unwrap"), (.derive, "derive"),
        ]
        #expect(
          Set((block["Usage"] ?? "").components(separatedBy: ", ")) == Set(usages.filter { on($0.0) }.map(\.1)),
          "\(object.label!)")
        let access: [(AttributeType, String)] = [
          (.sensitive, "sensitive"), (.alwaysSensitive, "always sensitive"), (.extractable, "extractable"),
          (.neverExtractable, "never extractable"), (.local, "local"),
        ]
        #expect(
          Set((block["Access"] ?? "").components(separatedBy: ", ")) == Set(access.filter { on($0.0) }.map(\.1)),
          "\(object.label!)")
      }
      // The tool could not read a value either.
      #expect(tool.error.components(separatedBy: "CKR_ATTRIBUTE_SENSITIVE").count - 1 == 3)

      // A python-pkcs11 script.
      let script = try runProcess(custos, exec + ["python3", repositoryRoot + "/scripts/lockdown-inspect.py"])
      #expect(script.status == 0, "\(script.error)")
      let data = Data(script.output.utf8)
      let listed = try #require(try JSONSerialization.jsonObject(with: data) as? [[String: Any]])
      #expect(listed.count == 5)
      let objects = listed.filter { $0["class"] as? String == "CKO_SECRET_KEY" }
      #expect(objects.count == 3)
      for object in audited {
        let seen = try #require(objects.first { $0["label"] as? String == object.label })
        #expect(seen["class"] as? String == object.objectClass?.name)
        var compared = 0
        for (name, value) in seen where name.hasPrefix("CKA_") && name != "CKA_VALUE" {
          let type = try #require(AttributeType(name: name))
          let reading = try #require(object.readings[type], "\(name) is audited")
          if value is NSNull {
            #expect(reading == .invalid, "\(object.label!) \(name)")
          } else {
            #expect(reading.attribute?.boolValue == (value as? Bool), "\(object.label!) \(name)")
          }
          compared += 1
        }
        #expect(compared == 21)
        #expect(seen["CKA_VALUE"] as? String == "sensitive" && object.readings[.value] == .sensitive)
      }
    }

    @Test func theToolGetsThePartitionsVariablesInItsOwnEnvironmentWhileTheDeviceStaysLocked() throws {
      let (_, device, activation) = try activated()
      let pins = try activation.pins("custody")
      let output = try TemporaryDirectory("custos-lockdown-exec")
      let before = ProcessInfo.processInfo.environment
      let status = try TesterTool.run(
        [
          "sh", "-c",
          #"env > "$0/env.txt"; flock --nonblock "$1/device.lock" true; echo "lock $?" > "$0/lock.txt"; exit 3"#,
          output.path, device.directory,
        ], device: device, partition: "custody", pins: pins, logger: testLogger)
      #expect(status == 3)
      let lines = try String(contentsOfFile: output.appending("env.txt"), encoding: .utf8).split(separator: "\n")
      var seen = [String: String]()
      for line in lines {
        let parts = line.split(separator: "=", maxSplits: 1).map(String.init)
        if parts.count == 2, TesterTool.variables.contains(parts[0]) { seen[parts[0]] = parts[1] }
      }
      #expect(seen["PKCS11_MODULE"] == PKCS11Module.configuredPath)
      #expect(seen["SOFTHSM2_CONF"] == device.configurationPath(ofPartition: "custody"))
      #expect(seen["PKCS11_TOKEN_LABEL"] == "custody")
      #expect(seen["PKCS11_PIN"].map { SecretBytes(utf8: $0).constantTimeEquals(pins.user) } == true)
      // The device stayed locked by this process while the tool ran.
      #expect(try String(contentsOfFile: output.appending("lock.txt"), encoding: .utf8) == "lock 1\n")
      // Nothing was set in this process's environment.
      let after = ProcessInfo.processInfo.environment
      // (SOFTHSM2_CONF is set for an instant around other tests' C_Initialize, running in
      // parallel, so for it only this tool's value counts.)
      for name in TesterTool.variables where name != "SOFTHSM2_CONF" {
        #expect(after[name] == before[name], "\(name)")
      }
      #expect(after["SOFTHSM2_CONF"] != device.configurationPath(ofPartition: "custody"))
      #expect(after["PKCS11_PIN"] == nil)

      #expect(throws: HSMBridgeError(.invalidArgument, "no command to run (give it after --)")) {
        _ = try TesterTool.run([], device: device, partition: "custody", pins: pins, logger: testLogger)
      }
      #expect(throws: HSMBridgeError.self) {
        _ = try TesterTool.run(["true"], device: device, partition: "vault", pins: pins, logger: testLogger)
      }
      do {
        _ = try TesterTool.run(
          ["custos-no-such-tool"], device: device, partition: "custody", pins: pins, logger: testLogger)
        Issue.record("a missing tool started")
      } catch let error as HSMBridgeError {
        #expect(error.code == .toolFailed)
        #expect(error.reason == "cannot start custos-no-such-tool: No such file or directory")
      }
      // A wrong PIN is refused before anything starts.
      let wrong = PartitionPINs(
        partition: "custody", securityOfficer: pins.securityOfficer, user: SecretBytes(utf8: "0000"))
      #expect(throws: PKCS11Error(code: .pinIncorrect, function: "C_Login")) {
        _ = try TesterTool.run(["true"], device: device, partition: "custody", pins: wrong, logger: testLogger)
      }
    }

    @Test func theCommandLineAuditsListsAndExecs() throws {
      let shared = try SharedRehearsal.get()
      let custos = try #require(custosExecutable(), "the custos executable is built beside the tests")
      let quorum = [
        "--device", shared.outcome.device, "--participants", shared.rehearsal.participantsPath, "--rehearsal",
      ]
      let audit = try runProcess(custos, ["lockdown", "audit"] + quorum + ["--json"])
      #expect(audit.status == 0, "\(audit.error)")
      let json = try #require(try JSONSerialization.jsonObject(with: Data(audit.output.utf8)) as? [String: Any])
      #expect(json["passed"] as? Bool == true)
      #expect((json["checks"] as? [Any])?.count ?? 0 > 150)

      // A tester's attack whose expectation does not hold: exit status 1, and the table names it.
      let output = try TemporaryDirectory("custos-lockdown-cli")
      let attacks = output.appending("attacks.json")
      try Data(
        #"""
        {"format": "custos-lockdown-attacks", "version": 1, "attacks": [
          {"id": "tester.derive-audit", "title": "Derive from the audit key, expected refused",
           "tries": "C_DeriveKey from custos.audit", "why": "a wrong expectation, to see the audit fail",
           "operation": "derive", "target": {"label": "custos.audit"},
           "expect": {"refused": ["CKR_KEY_FUNCTION_NOT_PERMITTED"]}}]}
        """#.utf8
      ).write(to: URL(fileURLWithPath: attacks))
      let failing = try runProcess(custos, ["lockdown", "audit"] + quorum + ["--attacks", attacks])
      #expect(failing.status == 1)
      #expect(
        failing.output.contains(
          "FAILED tester.derive-audit custody/custos.audit (CKO_SECRET_KEY) [CKM_AES_ECB_ENCRYPT_DATA]: C_DeriveKey made"
        ))

      let list = try runProcess(custos, ["lockdown", "list", "--attacks", attacks])
      #expect(list.status == 0)
      for attack in LockdownCatalogue.builtIn { #expect(list.output.contains("\(attack.id)  \(attack.title)")) }
      #expect(list.output.contains("tester.derive-audit  Derive from the audit key, expected refused  [\(attacks)]"))

      let exec = try runProcess(
        custos,
        ["lockdown", "exec"] + quorum + [
          "--partition", "admin", "--", "sh", "-c", #"test "$PKCS11_TOKEN_LABEL" = admin && exit 5"#,
        ])
      #expect(exec.status == 5)
      let wrongHolder = try runProcess(
        custos, ["lockdown", "audit"] + quorum + ["--holder", "frank", "--holder", "mallory"])
      #expect(wrongHolder.status != 0)
      #expect(wrongHolder.error.contains("has no unseal key holder 'mallory'"))
      // Outside a rehearsal, a participants file with passwords is refused before anyone is asked.
      let real = try runProcess(custos, ["lockdown", "audit"] + quorum.dropLast())
      #expect(real.status != 0)
      #expect(real.error.contains("holds passwords (frank, grace, heidi)"))
    }
  }
}

/// The `custos` executable built beside the test bundle.
private func custosExecutable() -> String? {
  let besideTests = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent().appendingPathComponent(
    "custos"
  ).path
  for path in [besideTests, repositoryRoot + "/.build/debug/custos"]
  where FileManager.default.isExecutableFile(atPath: path) {
    return path
  }
  return nil
}
