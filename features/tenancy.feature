@tenancy
Feature: Tenants never see each other's sessions
  Every request runs as the tenant of its token.  Another tenant's session
  is answered exactly as a session that does not exist: 404
  session_not_found, so ids never leak, and nothing changes.

  Background:
    Given a token for tenant "acme"
    And a token for tenant "umbrella"
    And "acme" has a session
    And "acme" sends the message "private to acme"

  Scenario Outline: Another tenant's session is as if it did not exist
    When "umbrella" tries to <request> the session of "acme"
    Then the answer is a 404 problem "session_not_found"
    And "umbrella" gets the same answer to <request> a session that does not exist

    Examples:
      | request                    |
      | read                       |
      | send a message to          |
      | list the commands of       |
      | read the events of         |
      | follow the event stream of |
      | cancel the command of      |
      | approve the command of     |
      | terminate                  |

  Scenario: A refused request changes nothing
    When "umbrella" tries to send a message to the session of "acme"
    And "umbrella" tries to terminate the session of "acme"
    Then "acme"'s session has 1 command
    And the command completes
    When "acme" reads its session
    Then the answer is 200
    And the session is "active"

  Scenario: Another tenant's list holds none of the session
    Given "umbrella" has a session
    Then "umbrella"'s list holds none of "acme"'s sessions
    And "acme"'s list holds none of "umbrella"'s sessions
