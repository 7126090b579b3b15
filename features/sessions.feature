@sessions
Feature: Create a session
  A tenant's client creates a session over the HTTP API.  The tenant comes
  from the client's token, never from the body.

  Background:
    Given a token for tenant "acme"

  Scenario: A new session is created, pending, at an address of its own
    When "acme" creates a session with {"metadata": {"purpose": "acceptance"}, "labels": {"team": "qa"}}
    Then the answer is 201
    And the answer is "acme"'s new session
    And its Location is the session's address
    And the session is "pending"
    And the session's metadata is {"purpose": "acceptance"}
    And the session's labels is {"team": "qa"}
    And the session's log starts with "session.created"
    When "acme" reads its session
    Then the answer is 200
    And the answer is "acme"'s new session
    And "acme" finds the session in its list

  Scenario: A tenant's token cannot create a session for another tenant
    When "acme" creates a session for tenant "umbrella"
    Then the answer is a 403 problem "forbidden"

  Scenario Outline: Without a valid token nothing is created
    When a client <with> creates a session
    Then the answer is a 401 problem "<code>"
    And the answer's "WWW-Authenticate" starts with "Bearer"

    Examples:
      | with                                | code              |
      | without a token                     | not_authenticated |
      | with the token "not.a-token.at-all" | invalid_token     |
      | with the token ""                   | invalid_token     |
