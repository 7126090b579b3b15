@approval
Feature: Tool calls that need approval
  A session's policy can require approval for a tool.  When the model
  calls it, the command waits for permission ("permission.requested") and
  nothing runs until the tenant approves or denies.  Approved, the tool
  runs; denied, it never runs and the model is told it was not run.

  Background:
    Given a token for tenant "acme"
    And "acme" has a session whose policy requires approval for "exec"
    When "acme" sends the message '/tool exec {"argv": ["echo", "-n", "approved"]}'
    Then the command waits for permission
    And the command has one "permission.requested" event whose tool is "exec"
    And the command has no "tool.call" event

  Scenario: Approval granted: the tool runs and the model gets its result
    When "acme" approves the command
    Then the decision is "approved"
    And the command completes
    And the command has one "permission.resolved" event whose decision is "approved"
    And the command has one "tool.call" event
    And the command has one "tool.result" event whose stdout is "approved"
    And its result text starts with "exec returned:"
    And the command's events include, in this order:
      | permission.requested |
      | permission.resolved  |
      | tool.call            |
      | tool.result          |
      | command.completed    |

  Scenario: Approval denied: the tool never runs
    When "acme" denies the command with the reason "not today"
    Then the decision is "denied"
    And the command completes
    And the command has one "permission.resolved" event whose decision is "denied"
    And the command has no "tool.call" event
    And the command has no "tool.result" event
    And its result text is "exec was not run: permission denied."

  Scenario: Only a waiting command can be approved
    When "acme" approves the command
    And "acme" approves the command
    Then the answer is a 409 problem "command_state"
