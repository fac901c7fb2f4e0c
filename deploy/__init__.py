"""The deploy tool: builds the wheel and the Lambda packages and creates or updates the CloudFormation stacks."""
