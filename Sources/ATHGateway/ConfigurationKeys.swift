import ATHCore
import Configuration
import Foundation

extension GatewayConfiguration {
    /// Typed reads that tell a missing key from a wrong one: swift-configuration's optional
    /// getters answer nil for both, and a port written as "eighty" must stop the start, naming the
    /// key, rather than fall back to the default.
    struct Keys {
        let reader: ConfigReader

        private func read<T>(_ key: String, _ get: (ConfigKey) throws -> T) throws -> T? {
            do {
                return try get(ConfigKey(key))
            } catch {
                let text = "\(error)"
                if text.hasPrefix("Missing required config value") { return nil }
                throw GatewayConfigurationError(key: key, problem: "has the wrong type (\(text))")
            }
        }

        func optionalString(_ key: String) throws -> String? {
            try read(key) { try reader.requiredString(forKey: $0) }.flatMap { $0.isEmpty ? nil : $0 }
        }
        func optionalInt(_ key: String) throws -> Int? { try read(key) { try reader.requiredInt(forKey: $0) } }
        func optionalDouble(_ key: String) throws -> Double? { try read(key) { try reader.requiredDouble(forKey: $0) } }
        func optionalBool(_ key: String) throws -> Bool? { try read(key) { try reader.requiredBool(forKey: $0) } }
        func optionalStrings(_ key: String) throws -> [String]? { try read(key) { try reader.requiredStringArray(forKey: $0) } }

        func optionalInt(_ key: String, in range: ClosedRange<Int>) throws -> Int? {
            guard let value = try optionalInt(key) else { return nil }
            guard range.contains(value) else { throw GatewayConfigurationError(key: key, problem: "must be \(range.lowerBound)-\(range.upperBound)") }
            return value
        }

        func string(_ key: String) throws -> String {
            guard let value = try optionalString(key) else { throw GatewayConfigurationError(key: key, problem: "is required") }
            return value
        }

        func strings(_ key: String) throws -> [String] {
            guard let value = try optionalStrings(key) else { throw GatewayConfigurationError(key: key, problem: "is required (a list)") }
            return value
        }

        /// A required string turned into a value by `parse`, whose error becomes the key's.
        func parse<T>(_ key: String, _ parse: (String) throws -> T) throws -> T {
            let text = try string(key)
            do {
                return try parse(text)
            } catch let error as ATHError {
                throw GatewayConfigurationError(key: key, problem: error.message)
            } catch {
                throw GatewayConfigurationError(key: key, problem: "\(error)")
            }
        }

        /// `name = text` (scopes with their descriptions, account types with their scopes).
        static func named(_ line: String, key: String) throws -> (name: String, description: String) {
            let parts = line.split(separator: "=", maxSplits: 1).map { $0.trimmingCharacters(in: .whitespaces) }
            guard parts.count == 2, !parts[0].isEmpty, !parts[1].isEmpty, !parts[0].contains(" ") else {
                throw GatewayConfigurationError(key: key, problem: "'\(line.prefix(100))' is not written 'name = text'")
            }
            return (parts[0], parts[1])
        }

        /// A secret kept in its own file (never in the configuration, which is often shared).
        static func secret(_ path: String, key: String) throws -> String {
            guard let text = try? String(contentsOfFile: path, encoding: .utf8) else {
                throw GatewayConfigurationError(key: key, problem: "cannot read \(path)")
            }
            let secret = text.trimmingCharacters(in: .whitespacesAndNewlines)
            guard !secret.isEmpty else { throw GatewayConfigurationError(key: key, problem: "\(path) is empty") }
            return secret
        }
    }
}
