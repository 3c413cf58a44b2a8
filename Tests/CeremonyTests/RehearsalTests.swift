import Ceremony
import Crypto
import Custody
import Foundation
import HSMBridge
import TestSupport
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// One rehearsal of init-device from the example participants file, shared by the suite: Argon2
/// runs at its real cost (t=3, m=64 MiB, p=4), so the suite runs the ceremony once.
final class SharedRehearsal: @unchecked Sendable {
  static let shared = Result { try SharedRehearsal() }

  let rehearsal: Rehearsal
  let outcome: CeremonyOutcome
  let lines: [String]

  private init() throws {
    rehearsal = try Rehearsal()
    let lines = Lines()
    outcome = try rehearsal.run(lines: lines)
    self.lines = lines.lines
    sharedRehearsalPath = rehearsal.directory.path
    atexit { if let path = sharedRehearsalPath { try? FileManager.default.removeItem(atPath: path) } }
  }

  static func get() throws -> SharedRehearsal { try shared.get() }
}

nonisolated(unsafe) private var sharedRehearsalPath: String?

private let holders = ["frank", "grace", "heidi"]
private let passwords = [
  "frank": "frank-rehearsal-password", "grace": "grace-rehearsal-password", "heidi": "heidi-rehearsal-password",
]

private func share(_ shared: SharedRehearsal, _ holder: String, password: String? = nil) -> UnsealShare {
  UnsealShare(path: shared.rehearsal.share(holder), password: SecretBytes(utf8: password ?? passwords[holder]!))
}

@Suite(.serialized) struct RehearsalTests {
  @Test func theExampleRehearsalCreatesADeviceWhoseTranscriptVerifies() throws {
    let shared = try SharedRehearsal.get()
    let outcome = shared.outcome
    #expect(outcome.device == shared.rehearsal.device)
    #expect(outcome.signers == ["alice", "bob", "carol", "dave", "erin"])
    #expect(outcome.transcript.hasPrefix(outcome.device + "/transcripts/init-device-"))
    #expect(outcome.transcript.hasSuffix(".jsonl") && outcome.record.hasSuffix(".md"))
    let summary = try TranscriptVerifier.verify(path: outcome.transcript)
    #expect(summary.ceremony == "init-device")
    #expect(summary.steps == 13)
    #expect(summary.head == outcome.head)
    #expect(summary.signers == outcome.signers)
    #expect(summary.participants.map(\.name) == ["alice", "bob", "carol", "dave", "erin"])
    // Progress was shown step by step.
    #expect(shared.lines.filter { $0.hasPrefix("Step ") }.count == 13)

    let device = try Device.open(at: outcome.device, logger: testLogger)
    #expect(device.manifest.partitions.map(\.name) == ["custody", "admin"])
    #expect(device.manifest.partitions.map(\.profile) == ["custody", "admin"])
    let enrolment = try device.enrolment()
    #expect(enrolment.officers.map(\.name) == ["alice", "bob", "carol", "dave", "erin"])
    #expect(
      enrolment.officers.map(\.roles) == [
        [.securityOfficer], [.cryptoOfficer], [.cryptoOfficer], [.auditUser], [.domainUser],
      ])
    #expect(enrolment.unsealHolders == holders.enumerated().map { EnrolledUnsealHolder(name: $1, shareIndex: $0 + 1) })
    #expect(enrolment.activation?.threshold == 2 && enrolment.activation?.shares == 3)
    #expect(enrolment.transcripts == [String(outcome.transcript.dropFirst(outcome.device.count + 1))])
    // Each officer's enrolled key is their token's.
    for officer in enrolment.officers {
      let token = try OfficerToken.open(
        at: shared.rehearsal.rehearsalDirectory + "/officers/\(officer.name)", logger: testLogger)
      #expect(officer.publicKey == Hex.encode(token.publicKey))
    }
    // The Crypto User credential was handed over once; the device holds only its verifier.
    let credentialText = try String(contentsOfFile: shared.rehearsal.credential, encoding: .utf8)
    #expect(credentialText.hasPrefix(CryptoUserCredential.prefix) && credentialText.hasSuffix("\n"))
    let credential = SecretBytes(utf8: String(credentialText.dropLast()))
    #expect(try enrolment.cryptoUser?.verify(credential) == true)
    #expect(try enrolment.cryptoUser?.verify(SecretBytes(utf8: "custos-cu1-guess")) == false)
    // Permissions: the device 0700 throughout, files 0600; shares and the credential 0600.
    for path in [outcome.device, outcome.device + "/transcripts"] {
      #expect(try FileManager.default.attributesOfItem(atPath: path)[.posixPermissions] as? Int == 0o700)
    }
    for path in [outcome.device + "/enrolment.json", outcome.transcript, outcome.record, shared.rehearsal.credential]
      + holders.map(shared.rehearsal.share)
    {
      #expect(try FileManager.default.attributesOfItem(atPath: path)[.posixPermissions] as? Int == 0o600, "\(path)")
    }
  }

  @Test func noSecretIsWrittenAnywhereButWhereItBelongs() throws {
    let shared = try SharedRehearsal.get()
    let credential = try String(contentsOfFile: shared.rehearsal.credential, encoding: .utf8).dropLast()
    let secrets =
      [String(credential), String(credential.dropFirst(CryptoUserCredential.prefix.count))]
      + ["alice", "bob", "carol", "dave", "erin"].map { "\($0)-rehearsal-pin" } + Array(passwords.values)
    var texts = try snapshot(shared.rehearsal.device).map { ($0.key, $0.value) }
    texts += holders.map { ("share of \($0)", FileManager.default.contents(atPath: shared.rehearsal.share($0))!) }
    texts.append(("progress", Data(shared.lines.joined(separator: "\n").utf8)))
    for (name, data) in texts {
      for secret in secrets {
        #expect(data.range(of: Data(secret.utf8)) == nil, "\(name) contains a secret")
      }
    }
    // The derived partition PINs are not on disk either (the SoftHSM token files hold only
    // their PBKDF2-protected keys).
    let activation = try Device.open(at: shared.outcome.device, logger: testLogger).activate(
      shares: [share(shared, "frank"), share(shared, "grace")])
    for partition in ["custody", "admin"] {
      let pins = try activation.pins(partition)
      for pin in [pins.user, pins.securityOfficer] {
        let text = pin.withUnsafeBytes { Data($0) }
        #expect(pin.count == 64)
        for (name, data) in texts { #expect(data.range(of: text) == nil, "\(name) contains a PIN") }
      }
    }
  }

  @Test func everyAttributeOfEveryObjectMatchesThePolicyTable() throws {
    let shared = try SharedRehearsal.get()
    let device = try Device.open(at: shared.outcome.device, logger: testLogger)
    let activation = try device.activate(shares: [share(shared, "grace"), share(shared, "heidi")])
    let summary = try TranscriptVerifier.verify(path: shared.outcome.transcript)
    for partition in ["custody", "admin"] {
      let session = try device.partition(partition).openSession(readWrite: false)
      // Nothing is visible without the derived User PIN: every object is private.
      #expect(try session.findObjects().isEmpty)
      try session.login(.user, pin: try activation.pins(partition).user)
      let report = try AttributePolicy.audit(partition: partition, session: session)
      #expect(report.findings.map(\.description) == [])
      // Exactly the table's objects: one per key row, two root-state slots.
      var counted = [String: Int]()
      for object in report.objects { counted[object.policy?.name ?? "unknown", default: 0] += 1 }
      var wanted = [String: Int]()
      for row in AttributePolicy.rows(partition: partition) {
        if case .exactly(let count) = row.cardinality { wanted[row.name] = count }
      }
      #expect(counted == wanted)
      for object in report.objects {
        // Every audited attribute was read, and each reading is what the table says.
        #expect(Set(object.readings.keys) == Set(AttributePolicy.auditedAttributes))
        let expectations = try #require(object.policy).expectations
        for (type, reading) in object.readings {
          #expect(expectations[type]!.isMet(by: reading), "\(partition)/\(object.label ?? "") \(type)")
        }
        if object.objectClass == .data {
          // The vault's root state (checked here independently of the table): private token
          // objects that only the vault's commits rewrite, never copyable; step 9 wrote them.
          #expect(partition == "custody")
          #expect(object.application == "custos.root")
          #expect(object.readings[.private] == .value(.private(true)))
          #expect(object.readings[.token] == .value(.token(true)))
          #expect(object.readings[.copyable] == .value(.copyable(false)))
          #expect(object.readings[.modifiable] == .value(.modifiable(true)))
          #expect(summary.entries.contains { $0.kind == .stepCompleted && $0.records?["objects"] == .int(2) })
          continue
        }
        // DESIGN.md section 4, independently of the table.
        let label = object.label ?? ""
        #expect(object.readings[.token] == .value(.token(true)))
        #expect(object.readings[.private] == .value(.private(true)))
        #expect(object.readings[.modifiable] == .value(.modifiable(false)))
        #expect(object.readings[.copyable] == .value(.copyable(false)))
        #expect(object.readings[.destroyable] == .value(.destroyable(false)))
        for usage: AttributeType in [.encrypt, .decrypt, .verify, .wrap, .unwrap] {
          #expect(object.readings[usage] == .invalid || object.readings[usage] == .value(.boolean(usage, false)!))
        }
        let isPrivateKey = object.objectClass == .privateKey
        #expect(object.readings[.sign] == .invalid || object.readings[.sign] == .value(.sign(isPrivateKey)))
        if object.objectClass != .publicKey {
          #expect(object.readings[.value] == .sensitive)
          #expect(object.readings[.sensitive] == .value(.sensitive(true)))
          let extractable = label == "custos.master" || label == "custos.sync"
          #expect(object.readings[.extractable] == .value(.extractable(extractable)))
          #expect(object.readings[.wrapWithTrusted] == .value(.wrapWithTrusted(extractable)))
        }
        let derives = ["custos.master", "custos.sync", "custos.audit"].contains(label)
        #expect(object.readings[.derive] == .value(.derive(derives)))
        // The transcript recorded this object with its class, label and every attribute as read
        // back (handles are per module instance, so the one recorded is the generating one's).
        let recorded = summary.entries.contains { entry in
          guard entry.kind == .stepCompleted, case .array(let objects)? = entry.records?["objects"] else {
            return false
          }
          return objects.contains {
            guard case .object(let fields) = $0, case .object(let attributes)? = fields["attributes"],
              case .int = fields["handle"]
            else { return false }
            return fields["label"] == .string(label) && fields["class"] == .string(object.objectClass!.name)
              && attributes["CKA_DERIVE"] == .string("\(derives)")
              && attributes["CKA_VALUE"]
                == (object.objectClass == .publicKey ? nil : .string("(sensitive: unreadable)"))
              && attributes["CKA_CHECK_VALUE"] == checkValue(object)
          }
        }
        #expect(recorded, "\(label) \(object.handle)")
      }
    }
    // The admin public keys in the transcript are the token's.
    let session = try device.partition("admin").openSession(readWrite: false)
    try session.login(.user, pin: try activation.pins("admin").user)
    for label in ["custos.codesign", "custos.attest"] {
      let handle = try #require(try session.findObjects([.class(.publicKey), .label(label)]).first)
      guard case .ecPoint(let der)? = try session.attribute(.ecPoint, of: handle) else {
        Issue.record("no EC point")
        continue
      }
      let recorded = summary.entries.first { $0.kind == .stepCompleted && $0.records?["key"] == .string(label) }
      #expect(recorded?.records?["public-key"] == .string(Hex.encode(der.dropFirst(2))))
    }
  }

  @Test func anyTwoOfThreeSharesActivateAndOneOrAWrongPasswordDoesNot() throws {
    let shared = try SharedRehearsal.get()
    let device = try Device.open(at: shared.outcome.device, logger: testLogger)
    var userPINs = Set<Data>()
    for pair in [("frank", "grace"), ("frank", "heidi"), ("grace", "heidi"), ("heidi", "frank")] {
      let activation = try device.activate(shares: [share(shared, pair.0), share(shared, pair.1)])
      #expect(activation.holders == [pair.0, pair.1])
      try device.checkActivation(activation)
      userPINs.insert(try activation.pins("custody").user.withUnsafeBytes { Data($0) })
    }
    #expect(userPINs.count == 1)
    // (Logging in rewrites SoftHSM's token.object; refusals below must not change a byte.)
    let before = try snapshot(shared.outcome.device)

    func refusal(_ shares: [UnsealShare]) -> HSMBridgeError? {
      do {
        _ = try device.activate(shares: shares)
        return nil
      } catch {
        return error as? HSMBridgeError
      }
    }
    let single = refusal([share(shared, "grace")])
    #expect(single?.code == .notEnoughShares)
    #expect(single?.reason.contains("1 share given") == true)
    #expect(single?.reason.contains("needs 2") == true)
    let wrong = refusal([share(shared, "frank"), share(shared, "grace", password: "grace-mistyped")])
    #expect(wrong?.code == .wrongPassword)
    #expect(wrong?.reason.contains("grace") == true)
    #expect(wrong?.reason.contains("mistyped") == false)
    #expect(refusal([share(shared, "frank"), share(shared, "frank")])?.code == .notEnoughShares)
    #expect(refusal([])?.code == .notEnoughShares)
    // A share file moved to another holder's name does not open.
    var forged = try UnsealShareFile.read(shared.rehearsal.share("heidi"))
    forged.index = 1
    let forgedPath = shared.rehearsal.directory.appending("forged.share")
    try forged.write(to: forgedPath)
    defer { try? FileManager.default.removeItem(atPath: forgedPath) }
    let forgedShare = UnsealShare(path: forgedPath, password: SecretBytes(utf8: passwords["heidi"]!))
    #expect(refusal([share(shared, "grace"), forgedShare])?.code == .shareInvalid)
    // Refusals changed nothing on the device.
    #expect(try snapshot(shared.outcome.device) == before)
  }

  @Test func aFlippedByteInALineOrASignatureFailsVerifyAtThatLine() throws {
    let shared = try SharedRehearsal.get()
    let text = try String(contentsOfFile: shared.outcome.transcript, encoding: .utf8)
    let lines = text.split(separator: "\n").map(String.init)
    #expect(lines.count == (try TranscriptVerifier.verify(text: text)).lines)
    func failure(_ lines: [String]) -> TranscriptError? {
      do {
        _ = try TranscriptVerifier.verify(text: lines.joined(separator: "\n") + "\n")
        return nil
      } catch {
        return error as? TranscriptError
      }
    }
    func flip(_ line: String, at offset: Int) -> String {
      var bytes = Array(line.utf8)
      // A hex digit stays a hex digit, other characters change by one bit.
      bytes[offset] = bytes[offset] == UInt8(ascii: "0") ? UInt8(ascii: "1") : (bytes[offset] ^ 0x01)
      return String(decoding: bytes, as: UTF8.self)
    }
    // A flipped byte anywhere in a line (its content, its hash, its previous hash) is caught at
    // that line.
    for index in [0, 5, lines.count / 2, lines.count - 1] {
      for offset in [10, lines[index].utf8.count / 2, lines[index].utf8.count - 5] {
        var tampered = lines
        tampered[index] = flip(lines[index], at: offset)
        #expect(failure(tampered)?.line == index + 1, "line \(index + 1) offset \(offset)")
      }
    }
    // A flipped byte inside a signature: caught at its line.
    let signed = try #require(
      lines.firstIndex { $0.contains("\"kind\":\"step-authorised\"") && $0.contains("Crypto Officer") })
    let signatureStart = try #require(lines[signed].range(of: "\"signature\":\"")).upperBound
    let offset = lines[signed].utf8.distance(from: lines[signed].startIndex, to: signatureStart) + 7
    var tampered = lines
    tampered[signed] = flip(lines[signed], at: offset)
    #expect(failure(tampered)?.line == signed + 1)

    // Even with every hash recomputed after the change (a rewritten chain), the signature itself
    // fails at that line.
    var entries = lines.map { line -> TranscriptEntry in
      let body = String(line.dropLast(",\"hash\":\"\"}".count + 64)) + "}"
      return try! JSONDecoder().decode(TranscriptEntry.self, from: Data(body.utf8))
    }
    var signature = Array(entries[signed].signatures![0].signature)
    signature[7] = signature[7] == "0" ? "1" : "0"
    entries[signed].signatures![0].signature = String(signature)
    #expect(failure(rechain(entries))?.line == signed + 1)
    #expect(failure(rechain(entries))?.reason.contains("does not verify") == true)
    // Unchanged, the rewritten chain verifies: the rewrite itself is faithful.
    entries[signed].signatures![0].signature =
      lines[signed].components(separatedBy: "\"signature\":\"")[1].prefix(128).description
    #expect(failure(rechain(entries)) == nil)

    // A missing sign-off, a truncated ceremony, a reordered line.
    #expect(failure(Array(lines.dropLast()))?.reason.contains("did not sign off") == true)
    let completed = try #require(lines.firstIndex { $0.contains("\"kind\":\"ceremony-completed\"") })
    #expect(failure(Array(lines.prefix(completed)))?.reason.contains("did not complete") == true)
    var swapped = lines
    swapped.swapAt(3, 4)
    #expect(failure(swapped)?.line == 4)
    // The CLI's path: a file with one flipped byte.
    let path = shared.rehearsal.directory.appending("tampered.jsonl")
    try (tampered.joined(separator: "\n") + "\n").write(toFile: path, atomically: true, encoding: .utf8)
    #expect(throws: TranscriptError(line: signed + 1, "its text does not match its hash (the line was altered)")) {
      _ = try TranscriptVerifier.verify(path: path)
    }
  }
}

/// The check value of a secret key as the transcript writes it, nil for other objects.
private func checkValue(_ object: AuditedObject) -> JSONValue? {
  guard case .value(.checkValue(let bytes))? = object.readings[.checkValue] else { return nil }
  return .string(Hex.encode(bytes))
}

/// Re-encodes entries as a fresh chain, as someone rewriting a transcript would.
private func rechain(_ entries: [TranscriptEntry]) -> [String] {
  var previous = String(repeating: "0", count: 64)
  var lines = [String]()
  let encoder = JSONEncoder()
  encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
  for var entry in entries {
    entry.prev = previous
    let body = String(decoding: try! encoder.encode(entry), as: UTF8.self)
    let hash = Hex.encode(SHA256.hash(data: Array(body.utf8)))
    lines.append(String(body.dropLast()) + ",\"hash\":\"\(hash)\"}")
    previous = hash
  }
  return lines
}
