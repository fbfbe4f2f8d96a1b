import ATHAgent
import ATHCore
import ArgumentParser
import Foundation

/// `ath account ...`: the account registry through the admin API of a running server.
struct AccountCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "account", abstract: "Manage accounts through a server's admin API (register, look up, aliases, ids, keys, suspension).",
        subcommands: [
            Register.self, Show.self, AddNames.self, AddKey.self, RotateKey.self, RevokeKey.self, Suspend.self, Reinstate.self, SetType.self, RevokeGrant.self, RevokeToken.self,
            RevokeRegistration.self,
        ])

    struct Connection: ParsableArguments {
        @Option(help: "Server base URL.") var url: String = "http://127.0.0.1:8080"
        @Option(help: "File holding the admin token (`ath serve` writes <store>.admin-token).") var adminTokenFile: String = "ath.sqlite.admin-token"
        @OptionGroup var tls: ClientTLSOptions

        func client() throws -> ATHAdminClient {
            let token = try String(contentsOfFile: adminTokenFile, encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)
            return ATHAdminClient(baseURL: url, adminToken: token, httpClient: try tls.httpClient())
        }
    }

    static func show(_ account: Account) throws {
        Swift.print(String(decoding: try CanonicalJSON.bytes(of: account), as: UTF8.self))
    }

    static func publicKey(_ path: String) throws -> PublicKey {
        try PublicKey(pem: readText(path, "the public key file"))
    }

    struct Register: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Register an account; prints it.")
        @OptionGroup var connection: Connection
        @Option(help: "The account's DID (its first external id).") var did: String
        @Option(help: "user (end user), agent (third party) or service (application component).") var kind: String
        @Option(help: "Display name.") var name: String
        @Option(help: "Developer (agents).") var developer: String?
        @Option(help: "An alias (repeatable): e-mail, phone, chosen name.") var alias: [String] = []
        @Option(help: "A further external id (repeatable).") var externalID: [String] = []
        @Option(help: "A public key PEM file.") var publicKey: String?
        @Option(help: "The account's type on this service (e.g. read, read-write): which scopes it may hold.") var type: String?

        func run() async throws {
            guard let kind = Account.Kind(rawValue: kind) else { throw ValidationError("--kind is user, agent or service") }
            let account = Account(
                did: did, kind: kind, name: name, developer: developer, aliases: alias, externalIDs: externalID, accountType: type)
            try AccountCommand.show(try await connection.client().register(account, key: try publicKey.map(AccountCommand.publicKey)))
        }
    }

    struct Show: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Print an account found by an external id or, with --alias, an alias.")
        @OptionGroup var connection: Connection
        @Flag(help: "The argument is an alias.") var alias = false
        @Argument(help: "External id (DID or other) or alias.") var id: String

        func run() async throws {
            let client = try connection.client()
            try AccountCommand.show(alias ? try await client.account(alias: id) : try await client.account(id))
        }
    }

    struct AddNames: AsyncParsableCommand {
        static let configuration = CommandConfiguration(commandName: "add", abstract: "Give an account more aliases and/or external ids.")
        @OptionGroup var connection: Connection
        @Argument(help: "The account (an external id).") var id: String
        @Option(help: "A new alias (repeatable).") var alias: [String] = []
        @Option(help: "A new external id: a DID, an agent's AIC or base64url (repeatable).") var externalID: [String] = []
        @Option(help: "Link a user to an OpenID Connect subject: the provider's issuer URL (with --oidc-subject).") var oidcIssuer: String?
        @Option(help: "The subject (`sub`) of the user at --oidc-issuer.") var oidcSubject: String?

        func run() async throws {
            var ids = externalID
            switch (oidcIssuer, oidcSubject) {
            case (let issuer?, let subject?):
                ids.append(OpenIDConnect.externalID(issuer: issuer.hasSuffix("/") ? String(issuer.dropLast()) : issuer, subject: subject))
            case (nil, nil): break
            default: throw ValidationError("--oidc-issuer and --oidc-subject go together")
            }
            guard !alias.isEmpty || !ids.isEmpty else { throw ValidationError("give --alias, --external-id or --oidc-issuer/--oidc-subject") }
            let client = try connection.client()
            var account = try await client.account(id)
            for a in alias { account = try await client.addAlias(a, to: id) }
            for e in ids { account = try await client.addExternalID(e, to: id) }
            try AccountCommand.show(account)
        }
    }

    struct AddKey: AsyncParsableCommand {
        static let configuration = CommandConfiguration(commandName: "add-key", abstract: "Add a public key; prints its kid.")
        @OptionGroup var connection: Connection
        @Argument(help: "The account (an external id).") var id: String
        @Option(help: "The public key PEM file.") var publicKey: String

        func run() async throws { print(try await connection.client().addKey(try AccountCommand.publicKey(publicKey), to: id)) }
    }

    /// One key of one account, on one server.
    struct KeyOfAccount: ParsableArguments {
        @OptionGroup var connection: Connection
        @Argument(help: "The account (an external id).") var id: String
        @Option(help: "The kid of the key (RFC 7638 thumbprint).") var kid: String
    }

    struct RotateKey: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "rotate-key", abstract: "Replace a key with a new one in one step; prints the new kid.")
        @OptionGroup var key: KeyOfAccount
        @Option(help: "The new public key PEM file.") var publicKey: String

        func run() async throws {
            print(try await key.connection.client().rotateKey(of: key.id, revoking: key.kid, to: try AccountCommand.publicKey(publicKey)))
        }
    }

    struct RevokeKey: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "revoke-key", abstract: "Revoke a key: what it signs (credentials, confirmations) is refused from now on.")
        @OptionGroup var key: KeyOfAccount

        func run() async throws {
            try await key.connection.client().revokeKey(of: key.id, kid: key.kid)
            print("revoked \(key.kid)")
        }
    }

    struct Suspend: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Suspend an account (e.g. a misbehaving agent): no new handshakes, and its grants in force end at once.")
        @OptionGroup var connection: Connection
        @Argument(help: "External id (DID or other).") var id: String

        func run() async throws {
            let (account, ended) = try await connection.client().suspend(id)
            try AccountCommand.show(account)
            print(ended.isEmpty ? "no grant was in force" : "ended grants: \(ended.joined(separator: " "))")
        }
    }

    struct SetType: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "set-type", abstract: "Set an account's type on the service; grants holding scopes it does not allow end.")
        @OptionGroup var connection: Connection
        @Argument(help: "External id (DID or other).") var id: String
        @Argument(help: "The type (e.g. read, read-write), or 'none' to clear it.") var type: String

        func run() async throws {
            let (account, ended) = try await connection.client().setAccountType(of: id, to: type == "none" ? nil : type)
            try AccountCommand.show(account)
            print(ended.isEmpty ? "no grant ended" : "ended grants: \(ended.joined(separator: " "))")
        }
    }

    struct RevokeGrant: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "revoke-grant", abstract: "Revoke a grant and its tokens (the agent is refused from now on).")
        @OptionGroup var connection: Connection
        @Argument(help: "The grant id.") var id: String

        func run() async throws {
            try await connection.client().revokeGrant(id)
            print("revoked grant \(id)")
        }
    }

    struct RevokeToken: AsyncParsableCommand {
        static let configuration = CommandConfiguration(commandName: "revoke-token", abstract: "Revoke one access token (its grant stays).")
        @OptionGroup var connection: Connection
        @Argument(help: "The token's jti.") var jti: String

        func run() async throws {
            try await connection.client().revokeToken(jti)
            print("revoked token \(jti)")
        }
    }

    struct RevokeRegistration: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "revoke-registration",
            abstract: "End a v0.1 agent's registration on a gateway: its open authorizations and its tokens end with it.")
        @OptionGroup var connection: Connection
        @Argument(help: "The agent's client_id.") var clientID: String

        func run() async throws {
            let count = try await connection.client().revokeRegistration(clientID)
            print("revoked registration \(clientID) and \(count) token(s)")
        }
    }

    struct Reinstate: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Lift a suspension; the grants it ended stay ended.")
        @OptionGroup var connection: Connection
        @Argument(help: "External id (DID or other).") var id: String

        func run() async throws { try AccountCommand.show(try await connection.client().reinstate(id)) }
    }
}
