@cancel
Feature: Cancel a command
  A queued or waiting command is cancelled at once and never runs; a
  running one is asked to stop, and its cell stops it.  A finished command
  cannot be cancelled.

  Background:
    Given a token for tenant "acme"

  Scenario: A queued command is cancelled before it runs
    Given "acme" has a session
    When "acme" sends the message "/sleep 3000 slow" as "slow"
    And "acme" sends the message "behind the slow one" as "queued"
    And "acme" cancels the command "queued"
    Then the answer is the command, "cancelled"
    When "acme" cancels the command "slow"
    Then the command "slow" ends "cancelled"
    And the command "queued" is "cancelled"
    And the command "queued" has no "command.started" event
    And the command "queued" has one "command.cancelled" event

  Scenario: A running command is asked to stop, and stops
    Given "acme" has a session
    When "acme" sends the message "/sleep 5000 slow" as "slow"
    Then the command "slow" starts running
    When "acme" cancels the command "slow"
    Then the answer is the command, cancel requested
    And the command "slow" ends "cancelled"
    And the command "slow" has one "command.cancel_requested" event
    And the command "slow" has no "command.completed" event

  Scenario: A command waiting for approval is cancelled and its tool never runs
    Given "acme" has a session whose policy requires approval for "exec"
    When "acme" sends the message '/tool exec {"argv": ["echo", "never"]}'
    Then the command waits for permission
    When "acme" cancels the command
    Then the answer is the command, "cancelled"
    And the command has one "command.cancelled" event
    And the command has no "tool.call" event

  Scenario: A finished command cannot be cancelled
    Given "acme" has a session
    When "acme" sends the message "done soon"
    Then the command completes
    When "acme" cancels the command
    Then the answer is a 409 problem "command_state"
