@idempotency
Feature: Retry a request safely
  A client that does not know whether its request arrived sends it again
  with the same Idempotency-Key: it gets the command it made the first
  time, and nothing new is enqueued.

  Background:
    Given a token for tenant "acme"
    And "acme" has a session

  Scenario: The same request with the same key makes one command
    When "acme" sends the message "once" with the Idempotency-Key "retry-1" as "first"
    Then the command is accepted as "queued"
    And the answer does not carry "Idempotency-Replayed"
    When "acme" sends the message "once" with the Idempotency-Key "retry-1"
    Then the answer is 202
    And the answer is the command "first"
    And the answer carries "Idempotency-Replayed": "true"
    And "acme"'s session has 1 command
    And the command "first" completes

  Scenario: The same key with another request is refused
    When "acme" sends the message "once" with the Idempotency-Key "retry-2" as "first"
    And "acme" sends the message "something else" with the Idempotency-Key "retry-2"
    Then the answer is a 422 problem "idempotency_conflict"
    And "acme"'s session has 1 command

  Scenario: Another key is another command
    When "acme" sends the message "once" with the Idempotency-Key "retry-3" as "first"
    And "acme" sends the message "once" with the Idempotency-Key "retry-4"
    Then the answer is 202
    And the answer is not the command "first"
    And "acme"'s session has 2 commands
