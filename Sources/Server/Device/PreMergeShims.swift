import VaultWire

// Until the device's wiring lands on main: the vault's own reason for a refusal.
extension VaultWireError {
  var reason: String? { nil }
}
