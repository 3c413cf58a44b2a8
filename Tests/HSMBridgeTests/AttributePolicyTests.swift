import Custody
import Foundation
import HSMBridge
import TestSupport
import Testing

/// A device with the custody and admin partitions and their real allow-lists.
private func policyDevice() throws -> (TemporaryDirectory, Device) {
  let test = try TestDevice(partitions: ["custody", "admin"], name: "policy", profile: nil)
  return (test.directory, test.device)
}

private func userSession(_ device: Device, _ partition: String) throws -> Session {
  let session = try device.partition(partition).openSession(readWrite: true)
  try session.login(.user, pin: SecretBytes(utf8: TestPINs.user))
  return session
}

@Suite(.serialized) struct AttributePolicyTests {
  @Test func theTableSaysWhatDesignSection4Says() throws {
    let keys = AttributePolicy.table.filter { $0.partition != OfficerToken.partitionName && $0.kind != .data }
    #expect(
      Set(keys.map { "\($0.partition)/\($0.label ?? "")" })
        == [
          "custody/custos.master", "custody/custos.sync", "custody/custos.audit", "admin/custos.codesign",
          "admin/custos.attest",
        ])
    for row in keys {
      let expected = row.expectations
      #expect(expected[.token] == .equals(.token(true)), "\(row)")
      #expect(expected[.private] == .equals(.private(true)), "\(row)")
      #expect(expected[.modifiable] == .equals(.modifiable(false)), "\(row)")
      #expect(expected[.copyable] == .equals(.copyable(false)), "\(row)")
      #expect(expected[.destroyable] == .equals(.destroyable(false)), "\(row)")
      for usage: AttributeType in [.encrypt, .decrypt, .verify, .wrap, .unwrap] {
        #expect(expected[usage] == .absent || expected[usage] == .equals(.boolean(usage, false)!), "\(row) \(usage)")
      }
      if row.objectClass != .publicKey {
        #expect(expected[.sensitive] == .equals(.sensitive(true)), "\(row)")
        #expect(expected[.value] == .unreadable, "\(row)")
      }
      let label = row.label ?? ""
      let derives = ["custos.master", "custos.sync", "custos.audit"].contains(label)
      #expect(expected[.derive] == .equals(.derive(derives)), "\(row)")
      let extractable = ["custos.master", "custos.sync"].contains(label)
      if row.objectClass != .publicKey {
        #expect(expected[.extractable] == .equals(.extractable(extractable)), "\(row)")
      }
      if extractable { #expect(expected[.wrapWithTrusted] == .equals(.wrapWithTrusted(true))) }
      let signs = ["custos.codesign", "custos.attest"].contains(label) && row.objectClass == .privateKey
      #expect(expected[.sign] == .absent || expected[.sign] == .equals(.sign(signs)), "\(row)")
      // Every exception carries a reason.
      #expect(row.exceptions.allSatisfy { $0.reason.count > 20 })
      // Templates put CKA_MODIFIABLE false last.
      #expect(row.template.last == .modifiable(false), "\(row)")
    }
  }

  @Test func theRootStateRowLetsOnlyTheVaultRewriteItsSlots() throws {
    let rows = AttributePolicy.table.filter { $0.kind == .data }
    #expect(rows.map(\.description) == ["custody/custos.root (CKO_DATA)"])
    let row = try #require(rows.first)
    #expect(row.cardinality == .exactly(2))
    let expected = row.expectations
    #expect(expected[.token] == .equals(.token(true)))
    #expect(expected[.private] == .equals(.private(true)))
    #expect(expected[.copyable] == .equals(.copyable(false)))
    #expect(expected[.application] == .equals(.application("custos.root")))
    // The two departures from the baseline, each with its reason: commits rewrite a slot's
    // label, and a torn slot is destroyed and written afresh.
    #expect(Set(row.exceptions.map(\.attribute)) == [.modifiable(true), .destroyable(true)])
    #expect(row.exceptions.allSatisfy { $0.reason.count > 20 })
    for type: AttributeType in [.sensitive, .extractable, .derive, .sign, .encrypt] {
      #expect(expected[type] == .absent, "\(type)")
    }
  }

  @Test func everyKeyGeneratedFromTheTableMatchesItExactly() throws {
    let (directory, device) = try policyDevice()
    _ = directory
    for partition in ["custody", "admin"] {
      let session = try userSession(device, partition)
      // Data rows (the root state's slots) are written by the vault; here from the row's template.
      try populateFromPolicyTable(partition: partition, session: session)
      var expectedObjects = 0
      for row in AttributePolicy.rows(partition: partition) {
        if case .exactly(let count) = row.cardinality { expectedObjects += count }
      }
      let report = try AttributePolicy.audit(partition: partition, session: session)
      #expect(report.findings.map(\.description) == [])
      #expect(report.objects.count == expectedObjects)
      // Every audited attribute was read of every object.
      for object in report.objects {
        #expect(object.readings.count == AttributePolicy.auditedAttributes.count)
        #expect(object.policy != nil)
      }
    }
  }

  @Test func departuresAreReportedAsStructuredFindings() throws {
    let (directory, device) = try policyDevice()
    _ = directory
    let session = try userSession(device, "custody")
    // custos.master generated as the table says; custos.sync missing; custos.audit twice, one
    // with CKA_DERIVE false and left modifiable; one object nobody asked for.
    _ = try AttributePolicy.generateKey("custos.master", partition: "custody", session: session)
    _ = try AttributePolicy.generateKey("custos.audit", partition: "custody", session: session)
    let auditRow = AttributePolicy.rows(key: "custos.audit", partition: "custody")[0]
    let weakened = auditRow.template.filter { $0.type != .modifiable && $0.type != .derive } + [.derive(false)]
    let weak = try session.generateKey(.aesKeyGen, weakened)
    _ = try session.createObject([.class(.data), .token(true), .private(true), .label("stray")])
    let report = try AttributePolicy.audit(partition: "custody", session: session)
    #expect(!report.isClean)
    let kinds = report.findings.map(\.kind)
    #expect(kinds.contains(.missingObject(found: 0, wanted: 1)))
    #expect(kinds.contains(.duplicateObject(count: 2, wanted: 1)))
    #expect(kinds.contains(.unexpectedObject))
    #expect(
      kinds.contains(.attributeMismatch(.derive, expected: .equals(.derive(true)), actual: .value(.derive(false)))))
    #expect(
      kinds.contains(
        .attributeMismatch(.modifiable, expected: .equals(.modifiable(false)), actual: .value(.modifiable(true)))))
    let mismatch = try #require(
      report.findings.first { if case .attributeMismatch(.derive, _, _) = $0.kind { true } else { false } })
    #expect(mismatch.object == weak)
    #expect(mismatch.description.contains("CKA_DERIVE"))
    #expect(
      report.findings.first { $0.kind == .missingObject(found: 0, wanted: 1) }?.objectName
        == "custos.sync (CKO_SECRET_KEY)")
  }

  @Test func lockedKeysRefuseBeingUnlocked() throws {
    let (directory, device) = try policyDevice()
    _ = directory
    let session = try userSession(device, "custody")
    let created = try AttributePolicy.generateKey("custos.audit", partition: "custody", session: session)
    let key = created[0].handle
    // CKA_MODIFIABLE false (last in the template) holds: usage flags cannot be switched on.
    #expect(throws: PKCS11Error.self) { try session.setAttributes([.encrypt(true)], of: key) }
    #expect(throws: PKCS11Error.self) { _ = try session.copyObject(key) }
    #expect(throws: PKCS11Error.self) { try session.destroyObject(key) }
    #expect(throws: PKCS11Error.self) {
      _ = try session.encrypt(.aesGCM(iv: [UInt8](repeating: 0, count: 12), aad: []), key: key, [1])
    }
    #expect(try session.bool(.encrypt, of: key) == false)
  }
}
