import Custody

/// One way a partition departs from the attribute policy.
public struct PolicyFinding: Hashable, Sendable, CustomStringConvertible {
  public enum Kind: Hashable, Sendable {
    /// An object no row of the policy covers.
    case unexpectedObject
    /// A row that must match exactly `wanted` objects matched fewer (`found`).
    case missingObject(found: Int, wanted: Int)
    /// A row that must match exactly `wanted` objects matched more (`count`).
    case duplicateObject(count: Int, wanted: Int)
    /// An attribute whose reading differs from the policy.
    case attributeMismatch(AttributeType, expected: AttributeExpectation, actual: AttributeReading)
  }

  public let partition: String
  /// The object (nil for a missing one).
  public let object: ObjectHandle?
  /// The row's name, or the object's class and label when no row covers it.
  public let objectName: String
  public let kind: Kind

  public var description: String {
    let subject = "\(partition)/\(objectName)\(object.map { " [\($0)]" } ?? "")"
    switch kind {
    case .unexpectedObject: return "\(subject): no row of the attribute policy covers this object"
    case .missingObject(let found, let wanted):
      return found == 0 ? "\(subject): missing" : "\(subject): \(found) objects where the policy wants \(wanted)"
    case .duplicateObject(let count, let wanted):
      return "\(subject): \(count) objects where the policy allows \(wanted)"
    case .attributeMismatch(let type, let expected, let actual):
      return "\(subject): \(type) is \(AuditedObject.describe(actual, of: type)), the policy says \(expected)"
    }
  }
}

/// Every attribute the checker read of one object.
public struct AuditedObject: Hashable, Sendable {
  public let handle: ObjectHandle
  public let objectClass: ObjectClass?
  public let label: String?
  public let application: String?
  /// The row that covers the object, if any.
  public let policy: ObjectPolicy?
  /// One reading per attribute of `AttributePolicy.auditedAttributes`.
  public let readings: [AttributeType: AttributeReading]

  static func describe(_ reading: AttributeReading, of type: AttributeType) -> String {
    switch reading {
    case .value(let attribute): "\(attribute)"
    case .sensitive: "unreadable (sensitive)"
    case .invalid: "absent"
    }
  }
}

/// What auditing one partition found: every object with every attribute, and the departures.
public struct PolicyReport: Sendable {
  public let partition: String
  public let objects: [AuditedObject]
  public let findings: [PolicyFinding]

  /// Whether the partition matches the policy exactly.
  public var isClean: Bool { findings.isEmpty }
}

extension AttributePolicy {
  /// Reads every audited attribute of every object visible to `session` (log in as the user to
  /// see private objects) and compares the partition with the rows for `partition`.
  ///
  /// Returns structured findings rather than throwing, so an audit can report everything at
  /// once; throws only when the token cannot be read.
  public static func audit(partition: String, session: Session) throws -> PolicyReport {
    let rows = rows(partition: partition)
    var objects = [AuditedObject]()
    var findings = [PolicyFinding]()
    var matches = [ObjectPolicy: Int]()
    for handle in try session.findObjects() {
      let values = try session.attributes(auditedAttributes, of: handle)
      var readings = [AttributeType: AttributeReading]()
      for (type, reading) in zip(auditedAttributes, values) { readings[type] = reading }
      var objectClass: ObjectClass? = nil
      if case .value(.class(let value)) = readings[.class] { objectClass = value }
      var label: String? = nil
      if case .value(.label(let value)) = readings[.label] { label = value }
      var application: String? = nil
      if case .value(.application(let value)) = readings[.application] { application = value }
      let row = objectClass.flatMap { objectClass in
        rows.first { $0.selects(objectClass: objectClass, label: label, application: application) }
      }
      objects.append(
        AuditedObject(
          handle: handle, objectClass: objectClass, label: label, application: application, policy: row,
          readings: readings))
      guard let row else {
        findings.append(
          PolicyFinding(
            partition: partition, object: handle,
            objectName: "\(label ?? application ?? "unlabelled") (\(objectClass.map(\.name) ?? "no class"))",
            kind: .unexpectedObject))
        continue
      }
      matches[row, default: 0] += 1
      let expectations = row.expectations
      for type in auditedAttributes {
        let expected = expectations[type] ?? .absent
        let actual = readings[type] ?? .invalid
        if !expected.isMet(by: actual) {
          findings.append(
            PolicyFinding(
              partition: partition, object: handle, objectName: row.name,
              kind: .attributeMismatch(type, expected: expected, actual: actual)))
        }
      }
    }
    for row in rows {
      guard case .exactly(let wanted) = row.cardinality else { continue }
      let count = matches[row, default: 0]
      if count < wanted {
        findings.append(
          PolicyFinding(
            partition: partition, object: nil, objectName: row.name, kind: .missingObject(found: count, wanted: wanted))
        )
      } else if count > wanted {
        findings.append(
          PolicyFinding(
            partition: partition, object: nil, objectName: row.name,
            kind: .duplicateObject(count: count, wanted: wanted)))
      }
    }
    return PolicyReport(partition: partition, objects: objects, findings: findings)
  }

  /// Generates the key labelled `label` in `partition` from its rows: a secret key with
  /// `C_GenerateKey`, or a key pair with `C_GenerateKeyPair`. Returns each object created with
  /// its row.
  public static func generateKey(
    _ label: String, partition: String, session: Session
  ) throws -> [(policy: ObjectPolicy, handle: ObjectHandle)] {
    let rows = rows(key: label, partition: partition)
    if rows.count == 1, case .aesKey = rows[0].kind {
      return [(rows[0], try session.generateKey(.aesKeyGen, rows[0].template))]
    }
    if rows.count == 2, let privateRow = rows.first(where: { $0.objectClass == .privateKey }),
      let publicRow = rows.first(where: { $0.objectClass == .publicKey }),
      case .ecPrivateKey(let curve) = privateRow.kind
    {
      let pair = try session.generateKeyPair(
        curve.keyPairGeneration, publicKey: publicRow.template, privateKey: privateRow.template)
      return [(privateRow, pair.privateKey), (publicRow, pair.publicKey)]
    }
    throw HSMBridgeError(
      .invalidArgument, "the attribute policy has no key '\(label)' in partition '\(partition)'")
  }
}
