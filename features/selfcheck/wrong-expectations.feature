@selfcheck
Feature: Self-check: a wrong expectation fails
  Each scenario expects something the product does not do.  Each must
  fail: test/suites/35-features runs them and counts a pass only when all
  of them failed.  They are not among the acceptance features.

  Background:
    Given a token for tenant "acme"
    And "acme" has a session

  Scenario: The model is expected to say what it never says
    When "acme" sends the message "hello"
    Then the command completes
    And its result text is "You said: goodbye"

  Scenario: Another tenant is expected to read the session
    Given a token for tenant "umbrella"
    When "umbrella" tries to read the session of "acme"
    Then the answer is 200

  Scenario: A stream resumed one event early is expected to have no duplicate
    When "acme" follows its session's event stream
    And "acme" sends the message "before the cut" as "before"
    Then the stream delivers the "command.completed" event of the command "before"
    When the client disconnects
    And the client reconnects with the event id before the last one it saw
    And "acme" sends the message "after the return" as "after"
    Then the stream delivers the "command.completed" event of the command "after"
    And across its connections the client saw every event of the session once, in order

  Scenario: A denied tool is expected to have run
    Given "acme" has a session whose policy requires approval for "exec"
    When "acme" sends the message '/tool exec {"argv": ["echo", "-n", "denied"]}'
    Then the command waits for permission
    When "acme" denies the command with the reason "self-check"
    Then the command completes
    And the command has one "tool.call" event

  Scenario: A retry with the same key is expected to make a second command
    When "acme" sends the message "once" with the Idempotency-Key "self-check" as "first"
    And "acme" sends the message "once" with the Idempotency-Key "self-check"
    Then "acme"'s session has 2 commands
