import Ceremony
import Custody
import Foundation
import HSMBridge
import TestSupport
import Testing

/// Runs a rehearsal expected to fail; returns its error.
private func failure(_ rehearsal: Rehearsal) -> CeremonyError? {
  do {
    _ = try rehearsal.run()
    Issue.record("the ceremony succeeded")
    return nil
  } catch let error as CeremonyError {
    return error
  } catch {
    Issue.record("not a CeremonyError: \(error)")
    return nil
  }
}

/// Adds an `acting:` section to the participants file.
private func acting(_ entries: [Int: [String]]) -> (String) -> String {
  { text in
    text + "\nacting:\n"
      + entries.keys.sorted().map { "  \($0): [\(entries[$0]!.joined(separator: ", "))]" }.joined(separator: "\n")
      + "\n"
  }
}

@Suite(.serialized) struct BadInputTests {
  @Test func aWrongOfficerPINFailsNamingTheStepAndLeavesNothing() throws {
    let rehearsal = try Rehearsal {
      $0.replacingOccurrences(of: "pin: carol-rehearsal-pin", with: "pin: carol-mistyped")
    }
    // carol's token exists with her real PIN; the file now gives a wrong one.
    try FileManager.default.createDirectory(
      atPath: rehearsal.rehearsalDirectory + "/officers", withIntermediateDirectories: true)
    _ = try OfficerToken.create(
      at: rehearsal.rehearsalDirectory + "/officers/carol", name: "carol",
      pin: SecretBytes(utf8: "carol-rehearsal-pin"),
      logger: testLogger)
    let error = try #require(failure(rehearsal))
    #expect(error.code == .wrongPIN)
    #expect(error.step == 1)
    #expect(error.description.hasPrefix("step 1 (Enrol the officers from their tokens): "))
    #expect(error.reason.contains("carol's officer token refused the PIN"))
    #expect(error.reason.contains("CKR_PIN_INCORRECT"))
    #expect(!error.description.contains("mistyped"))
    #expect(try rehearsal.leftovers() == [])
  }

  @Test func anOfficerActingOutsideTheirRoleIsRefusedByTheDevice() throws {
    // dave is an Audit User; at step 5 he stands in as a Crypto Officer.
    let rehearsal = try Rehearsal(edit: acting([5: ["bob", "dave"]]))
    let error = try #require(failure(rehearsal))
    #expect(error.code == .wrongRole)
    #expect(error.step == 5)
    #expect(error.description.contains("step 5 (Generate the sync key custos.sync)"))
    #expect(error.reason.contains("dave is enrolled as Audit User, not as Crypto Officer"))
    // The device was being built (steps 2-4 ran): nothing of it is left.
    #expect(try rehearsal.leftovers() == [])
  }

  @Test func aMissingQuorumFailsAtItsStep() throws {
    // Only one Crypto Officer is enrolled: carol becomes a Domain User.
    let rehearsal = try Rehearsal {
      $0.replacingOccurrences(
        of: "  - name: carol\n    roles: [Crypto Officer]", with: "  - name: carol\n    roles: [Domain User]")
    }
    let error = try #require(failure(rehearsal))
    #expect(error.code == .missingQuorum)
    #expect(error.step == 4)
    #expect(error.reason == "the quorum is 2 distinct Crypto Officers; 1 presented (bob)")
    #expect(try rehearsal.leftovers() == [])
  }

  @Test func aReusedOfficerDoesNotMakeAQuorum() throws {
    let rehearsal = try Rehearsal(edit: acting([7: ["carol", "carol"]]))
    let error = try #require(failure(rehearsal))
    #expect(error.code == .reusedParticipant)
    #expect(error.step == 7)
    #expect(error.reason.contains("carol was presented twice; a quorum of 2 needs 2 distinct Crypto Officers"))
    #expect(try rehearsal.leftovers() == [])
  }

  @Test func anExistingDeviceDirectoryIsLeftUntouched() throws {
    let rehearsal = try Rehearsal()
    try FileManager.default.createDirectory(atPath: rehearsal.device, withIntermediateDirectories: false)
    try Data("an operator's file".utf8).write(to: URL(fileURLWithPath: rehearsal.device + "/keep.txt"))
    let before = try snapshot(rehearsal.device)
    let error = try #require(failure(rehearsal))
    #expect(error.code == .alreadyExists)
    #expect(error.step == 2)
    #expect(error.reason.contains("already exists"))
    #expect(try snapshot(rehearsal.device) == before)
    // Nobody was asked for anything: no officer token was even created.
    #expect(!FileManager.default.fileExists(atPath: rehearsal.rehearsalDirectory + "/officers"))
  }

  @Test func aWrongUnsealPasswordFailsActivationAndLeavesNoShareBehind() throws {
    let rehearsal = try Rehearsal {
      $0.replacingOccurrences(
        of: "password: grace-rehearsal-password",
        with: "password: grace-rehearsal-password\n    unseal-password: grace-forgot")
    }
    let error = try #require(failure(rehearsal))
    #expect(error.code == .wrongPassword)
    #expect(error.step == 12)
    #expect(error.reason.contains("grace"))
    #expect(!error.description.contains("forgot"))
    // The share files and the credential of steps 10 and 11 were removed with the device.
    #expect(try rehearsal.leftovers() == [])
  }

  @Test func aSingleShareDoesNotActivate() throws {
    let rehearsal = try Rehearsal(edit: acting([12: ["heidi"]]))
    let error = try #require(failure(rehearsal))
    #expect(error.code == .missingQuorum)
    #expect(error.step == 12)
    #expect(error.reason == "the quorum is 2 distinct unseal key holders; 1 presented (heidi)")
    #expect(try rehearsal.leftovers() == [])
  }

  @Test func existingShareOrCredentialFilesAreNeverOverwritten() throws {
    let rehearsal = try Rehearsal()
    try FileManager.default.createDirectory(
      atPath: rehearsal.rehearsalDirectory + "/shares", withIntermediateDirectories: true)
    try Data("an older share".utf8).write(to: URL(fileURLWithPath: rehearsal.share("heidi")))
    let error = try #require(failure(rehearsal))
    #expect(error.code == .alreadyExists)
    #expect(error.step == 10)
    #expect(try String(contentsOfFile: rehearsal.share("heidi"), encoding: .utf8) == "an older share")
    #expect(!FileManager.default.fileExists(atPath: rehearsal.device))
  }

  @Test func participantsFilesAreCheckedBeforeAnythingHappens() throws {
    let rehearsal = try Rehearsal {
      $0.replacingOccurrences(of: "    token: officers/bob\n", with: "    token: officers/bob\n    badge: 42\n")
    }
    do {
      _ = try rehearsal.participants()
      Issue.record("an unknown key was accepted")
    } catch let error as CeremonyError {
      #expect(error.code == .participantsInvalid)
      #expect(error.reason.contains("unknown key 'badge'"))
      #expect(error.reason.contains("line "))
    }
    // PINs in the file are refused outside a rehearsal.
    let real = try Rehearsal()
    let participants = try real.participants()
    let engine = CeremonyEngine(
      script: try CeremonyScript.load(initDeviceScript), participants: participants, deviceDirectory: real.device,
      rehearsal: false, prompter: RehearsalPrompter(participants: participants, output: { _ in }), logger: testLogger)
    #expect(throws: CeremonyError.self) { _ = try engine.run() }
    #expect(try real.leftovers() == [])
  }
}
