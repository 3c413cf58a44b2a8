import Custody
import HSMBridge
import TestSupport
import Testing

@Suite(.serialized) struct ObjectTests {
  @Test func createFindReadSetCopyDestroy() throws {
    let test = try TestDevice()
    let session = try test.userSession()
    let object = try session.createObject([
      .class(.data), .token(true), .private(true), .label("note"), .application("custos"),
      .value([1, 2, 3]),
    ])
    let other = try session.createObject([.class(.data), .token(false), .label("other")])

    #expect(try session.findObjects([.label("note")]) == [object])
    #expect(try session.findObjects([.class(.data)]).count == 2)
    #expect(try session.findObjects([.label("nothing")]).isEmpty)

    let readings = try session.attributes([.label, .application, .value, .token, .private, .modulus], of: object)
    #expect(readings[0] == .value(.label("note")))
    #expect(readings[1] == .value(.application("custos")))
    #expect(readings[2] == .value(.value([1, 2, 3])))
    #expect(readings[3] == .value(.token(true)))
    #expect(readings[4] == .value(.private(true)))
    #expect(readings[5] == .invalid)

    try session.setAttributes([.label("renamed")], of: object)
    #expect(try session.attribute(.label, of: object) == .label("renamed"))

    let copy = try session.copyObject(object, changing: [.label("copy"), .token(false)])
    #expect(copy != object)
    #expect(try session.attribute(.label, of: copy) == .label("copy"))
    #expect(try session.attribute(.value, of: copy) == .value([1, 2, 3]))

    try session.destroyObject(copy)
    try session.destroyObject(other)
    #expect(try session.findObjects([.class(.data)]) == [object])
    #expect(throws: PKCS11Error(code: .objectHandleInvalid, function: "C_DestroyObject")) {
      try session.destroyObject(copy)
    }
  }

  @Test func findPagesThroughManyObjects() throws {
    let test = try TestDevice()
    let session = try test.userSession()
    for index in 0..<150 {
      _ = try session.createObject([.class(.data), .token(false), .label("item-\(index)")])
    }
    #expect(try session.findObjects([.class(.data)]).count == 150)
  }

  @Test func sensitiveValueIsReportedAsSensitive() throws {
    let test = try TestDevice()
    let session = try test.userSession()
    let key = try session.generateKey(
      .aesKeyGen, [.class(.secretKey), .keyType(.aes), .valueLength(32), .token(false), .sensitive(true)])
    let readings = try session.attributes([.value, .valueLength, .sensitive, .label, .ecPoint], of: key)
    #expect(readings[0] == .sensitive)
    #expect(readings[1] == .value(.valueLength(32)))
    #expect(readings[2] == .value(.sensitive(true)))
    #expect(readings[3] == .value(.label("")))
    #expect(readings[4] == .invalid)
  }

  @Test func privateObjectsAreInvisibleWithoutLogin() throws {
    let test = try TestDevice()
    let partition = try test.device.partition("scratch")
    let session = try test.userSession()
    _ = try session.createObject([.class(.data), .token(true), .private(true), .label("secret")])
    _ = try session.createObject([.class(.data), .token(true), .private(false), .label("public")])
    try session.logout()
    let anonymous = try partition.openSession(readWrite: false)
    let labels = try anonymous.findObjects().compactMap { try anonymous.attribute(.label, of: $0) }
    #expect(labels == [.label("public")])
  }

  @Test func readOnlyAttributeCannotBeChanged() throws {
    let test = try TestDevice()
    let session = try test.userSession()
    let key = try session.generateKey(
      .aesKeyGen,
      [.class(.secretKey), .keyType(.aes), .valueLength(16), .token(false), .sensitive(true), .modifiable(false)])
    let error = #expect(throws: PKCS11Error.self) { try session.setAttributes([.encrypt(true)], of: key) }
    #expect(error?.function == "C_SetAttributeValue")
    #expect(error?.code == .attributeReadOnly || error?.code == .actionProhibited)
  }
}
