@tools
Feature: Call a tool
  A tool command calls a tool on the session's sandbox host: "uppercase"
  is one of the host's builtin tools, "exec" runs a program in the
  session's sandbox (a container).  A tool's name is an identifier; any
  other name is refused before anything is enqueued.

  Background:
    Given a token for tenant "acme"
    And "acme" has a session

  Scenario Outline: A direct tool call returns the tool's result
    When "acme" calls the tool "<tool>" with <args>
    Then the command is accepted as "queued"
    And the command completes
    And the command has one "tool.call" event
    And the command has one "tool.result" event whose <field> is "<value>"
    And the command's events include, in this order:
      | command.received  |
      | tool.call         |
      | tool.result       |
      | command.completed |

    Examples:
      | tool      | args                                           | field       | value            |
      | uppercase | {"text": "nadi"}                               | result.text | NADI             |
      | exec      | {"argv": ["echo", "-n", "from the sandbox"]}   | stdout      | from the sandbox |

  Scenario: A model's tool call runs and the model sees the result
    When "acme" sends the message '/tool uppercase {"text": "shout"}'
    Then the command completes
    And the command has one "tool.result" event whose result.text is "SHOUT"
    And its result text starts with "uppercase returned:"

  Scenario Outline: A tool name that is not an identifier is refused
    When "acme" calls the tool "<name>" with {}
    Then the answer is a 422 problem "invalid_tool_name"
    And "acme"'s session has 0 commands

    Examples:
      | name      |
      | ../export |
      | x/../exec |
      | EXEC      |
